"""A class legend under a label picture: which colour is which class, and how much of it.

``fcnseg predict`` puts one under each side-by-side overlay. It is drawn with PIL
alone (no plotting library), in PIL's own font, scaled to the picture's width.

Example:
    >>> label = np.array([[0, 0, 1, 1], [0, 0, 0, 255]])
    >>> entries = legend_entries(label, ("sky", "road"), [(0, 0, 255), (90, 90, 90)])
    >>> [e.text for e in entries]
    ['sky 71.4%', 'road 28.6%']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcnseg.data.images import palette
from fcnseg.data.info import IGNORE_INDEX

Color = tuple[int, int, int]


@dataclass(frozen=True)
class LegendEntry:
    """One class present in a label map: its index, name, colour and share of the
    labelled (non-void) pixels."""

    index: int
    name: str
    color: Color
    share: float

    @property
    def text(self) -> str:
        """``name 12.3%``; a class under 0.05% of the pixels reads ``<0.1%``, not 0.0%."""
        percent = 100 * self.share
        return f"{self.name} {'<0.1' if percent < 0.05 else f'{percent:.1f}'}%"


def legend_entries(
    label: np.ndarray, classes: Sequence[str], colors: Sequence[Color]
) -> list[LegendEntry]:
    """The classes present in ``label`` (H, W), largest share first (ties: lower index).

    Void (255) pixels count for no class and are left out of the shares, so the
    shares sum to 1 whenever a pixel has a class. An index without a name (a model
    with more classes than ``classes``) is named ``class <i>``. Colours are those
    :func:`~fcnseg.data.images.colorize` paints.
    """
    values = np.asarray(label).reshape(-1)
    counts = np.bincount(values[values != IGNORE_INDEX].astype(np.int64), minlength=1)
    total = counts.sum()
    lut = np.array(palette(colors), dtype=np.uint8).reshape(256, 3)
    present = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))
    return [
        LegendEntry(
            index=int(i),
            name=classes[i] if i < len(classes) else f"class {i}",
            color=tuple(int(c) for c in lut[i]),
            share=float(counts[i] / total),
        )
        for i in present
    ]


def font_size(width: int) -> int:
    """Text height for a picture ``width`` pixels wide: readable at 100% zoom on a
    small picture, in proportion on a large one."""
    return int(np.clip(width // 48, 13, 40))


def draw_legend(entries: Sequence[LegendEntry], width: int) -> np.ndarray:
    """A white strip ``width`` pixels wide: per entry a colour swatch (outlined, so
    that white or black classes show) and its text, in rows that wrap.

    Returns:
        (H, width, 3) uint8, H a whole number of rows (one row when ``entries`` is empty).
    """
    size = font_size(width)
    font = ImageFont.load_default(size=size)
    pad, gap, line = size // 2, size // 3, round(1.6 * size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    places, x, y = [], pad, pad
    for entry in entries:
        span = size + gap + round(measure.textlength(entry.text, font=font))
        if x > pad and x + span > width - pad:  # wrap, unless first in its row
            x, y = pad, y + line
        places.append((x, y))
        x += span + 2 * size
    strip = Image.new("RGB", (width, y + size + pad), "white")
    draw = ImageDraw.Draw(strip)
    for entry, (x, y) in zip(entries, places, strict=True):
        draw.rectangle((x, y, x + size - 1, y + size - 1), fill=entry.color, outline=(0, 0, 0))
        draw.text(
            (x + size + gap, y + size / 2), entry.text, fill=(0, 0, 0), font=font, anchor="lm"
        )
    return np.asarray(strip)


def with_legend(
    picture: np.ndarray, label: np.ndarray, classes: Sequence[str], colors: Sequence[Color]
) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 with the legend of ``label``'s classes below it.

    The picture's pixels are kept as they are: the result's first H rows are ``picture``.

    Returns:
        (H + h, W, 3) uint8, h the legend's height.
    """
    strip = draw_legend(legend_entries(label, classes, colors), picture.shape[1])
    return np.concatenate([picture, strip], axis=0)
