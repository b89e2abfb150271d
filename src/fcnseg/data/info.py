"""What a label map means: class names, colours, void; and the error for bad data."""

from __future__ import annotations

from dataclasses import dataclass

from fcnseg.errors import UserError

IGNORE_INDEX = 255
"""The void label inside fcnseg: every dataset maps its own void value to it."""


class DataError(UserError, ValueError):
    """A problem with the user's data: reported as one line naming the file."""


def voc_colors(n: int = 21) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC palette: class i's colour spreads the bits of i over R, G, B."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


@dataclass(frozen=True)
class DatasetInfo:
    """Class names, display colours, the void value as stored on disk (None: no void)
    and, for colour masks, the void colour."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    void: int | None = IGNORE_INDEX
    void_color: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)
