"""The files ``fcnseg predict`` and ``eval`` read and write: every output planned and
checked before the first is written, never over an input or a file fcnseg did not
write, never two outputs in one file.

Each input ``<name>.<ext>`` gives ``<out>/<name>.png`` (its label map) and
``<out>/<name>_overlay.png``; ``<name>`` is the input's path relative to the
deepest folder holding all the inputs, so the same file name in two folders
gives two outputs in two subfolders. Inputs that differ only in their suffix
(``a.jpg`` and ``a.png``) keep it: ``a.jpg.png`` and ``a.png.png``.

Example:
    >>> [str(p) for p in output_names([Path("x/a.jpg"), Path("x/a.png"), Path("y/a.jpg")])]
    ['x/a.jpg', 'x/a.png', 'y/a']
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fcnseg.atomic import atomic_write
from fcnseg.data.images import IMAGE_SUFFIXES, overlay, save_label
from fcnseg.data.info import DataError, DatasetInfo
from fcnseg.data.legend import with_legend
from fcnseg.errors import ConfigError

if TYPE_CHECKING:
    from fcnseg.deploy.inference import Segmenter


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, each file
    once (a file both named and matched by a glob is predicted once)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            paths.append(p)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{item}: no such file, folder or matching glob")
            paths += [Path(m) for m in matches if Path(m).is_file()]
    unique = {os.path.realpath(p): p for p in reversed(paths)}  # the first mention wins
    return [p for p in paths if unique[os.path.realpath(p)] is p]


def output_names(paths: Sequence[Path]) -> list[Path]:
    """Each input's output name, relative to ``--out`` and without ``.png``: its path
    relative to the deepest folder holding every input, the suffix dropped unless
    another input differs from it only there."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    if not absolute:
        return []
    root = os.path.commonpath([p.parent for p in absolute])
    relative = [p.relative_to(root) for p in absolute]
    stems = Counter(r.with_suffix("") for r in relative)
    return [r.with_suffix("") if stems[r.with_suffix("")] == 1 else r for r in relative]


@dataclass(frozen=True)
class Planned:
    """The outputs of one input: ``source`` (as the user knows it), its label map and
    its overlay (None with ``--no-overlay``)."""

    source: str
    label: Path
    overlay: Path | None

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.label,) if self.overlay is None else (self.label, self.overlay)


def plan_outputs(
    sources: Sequence[str], names: Sequence[str | Path], out: Path, overlays: bool
) -> list[Planned]:
    """One :class:`Planned` per input: ``<out>/<name>.png`` and ``<out>/<name>_overlay.png``."""
    return [
        Planned(str(source), out / f"{name}.png", out / f"{name}_overlay.png" if overlays else None)
        for source, name in zip(sources, names, strict=True)
    ]


def check_plan(plan: Sequence[Planned], inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse, before anything is written, a plan that would lose or mix up data.

    Raises:
        ConfigError: two outputs in one file; an output in a folder that holds
            inputs, or that is an input (through a link too); an output that exists
            already, unless ``overwrite``.
    """
    inputs = list(inputs)
    outputs = _one_source_each(plan)
    _refuse_files_as_folders(outputs)
    _refuse_input_folders(outputs, inputs)
    _refuse_existing(outputs, inputs, overwrite)


def _one_source_each(plan: Sequence[Planned]) -> list[Path]:
    """Every planned file, each checked to come from one input only."""
    owner: dict[Path, str] = {}
    for item in plan:
        for path in item.files:
            if path in owner:
                raise ConfigError(
                    f"--out: {owner[path]} and {item.source} would both be written to {path}; "
                    "rename one of them (or pass --no-overlay)"
                )
            owner[path] = item.source
    return list(owner)


def _refuse_files_as_folders(outputs: Sequence[Path]) -> None:
    """Each output's folder, or its nearest existing parent, must be a folder."""
    for folder in dict.fromkeys(path.parent for path in outputs):
        existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
        if not existing.is_dir():
            raise ConfigError(
                f"--out: {existing} is a file, not a folder; give --out a folder (it is "
                "created if missing)"
            )


def _refuse_input_folders(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    folders = {os.path.realpath(p.parent): p for p in inputs}
    for folder in dict.fromkeys(path.parent for path in outputs):
        if os.path.realpath(folder) in folders:
            raise ConfigError(
                f"--out: {folder} holds the input {folders[os.path.realpath(folder)]}; "
                "write the predictions to a folder apart from the inputs"
            )


def _refuse_existing(outputs: Sequence[Path], inputs: Sequence[Path], overwrite: bool) -> None:
    """An input under another name (a link) never; other existing files with ``overwrite``."""
    existing = [path for path in outputs if os.path.lexists(path)]
    input_files = {_identity(p) for p in inputs}
    for path in existing:
        if path.exists() and _identity(path) in input_files:
            raise ConfigError(f"--out: {path} is an input (or a link to one); inputs are kept")
    if existing and not overwrite:
        raise ConfigError(
            f"--out: {existing[0]} exists ({len(existing)} of the {len(outputs)} output files "
            "do); pass --overwrite to replace them, or choose another folder"
        )


def _identity(path: Path) -> tuple[int, int]:
    """Device and inode: the same for every name (link) of one file."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def write_predictions(
    segmenter: Segmenter,
    plan: Sequence[Planned],
    items: Sequence,
    load: Callable[[object], np.ndarray],
    info: DatasetInfo,
    chunk: int,
) -> int:
    """Predict ``load(item)`` for each item and write its planned files, ``chunk``
    images in memory at a time: the label map in ``info``'s palette, and the overlay
    with a legend of the classes present below it. Returns the number of files written."""
    written = 0
    starts = range(0, len(items), chunk)
    for start in tqdm(starts, desc="predict", disable=len(starts) <= 1):
        images = [load(item) for item in items[start : start + chunk]]
        labels = segmenter.predict(images)
        for planned, image, label in zip(plan[start : start + chunk], images, labels, strict=True):
            planned.label.parent.mkdir(parents=True, exist_ok=True)
            save_label(label, planned.label, info.colors)
            if planned.overlay is not None:
                picture = overlay(image, label, info.colors)
                picture = with_legend(picture, label, info.classes, info.colors)
                Image.fromarray(picture).save(planned.overlay)
            written += len(planned.files)
    return written


EVAL_KEYS = ("checkpoint", "dataset", "split", "classes", "pixel_acc", "mean_iu")
"""Keys of every ``fcnseg eval --json`` file: what marks one as fcnseg's to replace."""
_LARGEST_EVAL_JSON = 2**24  # bytes; an eval result is a few KB, a checkpoint far more


def check_eval_json(path: Path) -> None:
    """Refuse, before an evaluation, a ``--json`` file that it must not replace.

    Raises:
        ConfigError: ``path`` is a folder, or a file other than an earlier eval result
            (a checkpoint, a user's JSON): fcnseg replaces only what it wrote.
    """
    if path.is_dir():
        raise ConfigError(f"--json {path}: is a folder; give the file to write")
    if path.exists() and not _is_eval_json(path):
        raise ConfigError(
            f"--json {path}: exists and is not an fcnseg eval result, so it is kept; give "
            "another file name"
        )


def _is_eval_json(path: Path) -> bool:
    """Whether ``path`` holds a JSON object with every key of :data:`EVAL_KEYS`."""
    try:
        if path.stat().st_size > _LARGEST_EVAL_JSON:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return False
    return isinstance(data, dict) and all(key in data for key in EVAL_KEYS)


def write_eval_json(path: Path, result: dict) -> None:
    """Write an eval result as JSON, atomically (a kill leaves the old file or the new)."""
    missing = [key for key in EVAL_KEYS if key not in result]
    if missing:  # a file without them could not be replaced by the next eval
        raise ValueError(f"an eval result needs the keys {', '.join(missing)}")
    atomic_write(path, lambda f: f.write(json.dumps(result, indent=2).encode()))
