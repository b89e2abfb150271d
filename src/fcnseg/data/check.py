"""Check every (image, label) pair once before training, and report all bad files at once.

A bad file (a corrupt image, a mask of the wrong size, a value that is neither a
class nor void, a colour not in ``classes.txt``) otherwise surfaces only when its
sample is first drawn, hours into a run, or never in a short one. Images are
verified without a full decode; labels are decoded and checked against the
classes (:meth:`~fcnseg.data.dataset.FileDataset.check`). Results are cached per
pair by path, size and mtime, so a second check of unchanged files is near-instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import suppress
from pathlib import Path

from tqdm.auto import tqdm

from fcnseg.atomic import atomic_write
from fcnseg.cache import cache_dir
from fcnseg.data.dataset import FileDataset, MultiHeadDataset, SegmentationDataset
from fcnseg.data.images import default_max_pixels
from fcnseg.data.info import DataError

CHECK_VERSION = 1
"""Bump when what :meth:`FileDataset.check` checks changes: older cached results are dropped."""
MAX_LISTED = 20
"""Bad files named in the error; the rest are counted."""

Stamp = list[int]  # [image size, image mtime_ns, label size, label mtime_ns]


def default_cache_dir() -> Path:
    """Where check results are kept between runs: ``$XDG_CACHE_HOME/fcnseg/checks``."""
    return cache_dir("checks")


def check_pairs(
    dataset: SegmentationDataset, *, cache_dir: Path | None = None, progress: bool = True
) -> None:
    """Check every pair of ``dataset``; raise one :class:`DataError` listing every bad file.

    Args:
        dataset: any dataset; only file datasets are checked (drawn scenes cannot
            be bad), each part of a :class:`MultiHeadDataset` on its own.
        cache_dir: where to keep results between calls (None: no cache). A pair
            is checked again when either file's size or mtime changed, or the
            dataset's classes, colours or void did.
        progress: show a progress bar.

    Raises:
        DataError: ``"N of M pairs in <split> are bad:"``, then one line per bad
            pair (at most :data:`MAX_LISTED`, then ``"... and K more"``).
    """
    if isinstance(dataset, MultiHeadDataset):  # each head's labels are files of their own
        for part in dataset.parts:
            check_pairs(part, cache_dir=cache_dir, progress=progress)
        return
    if not isinstance(dataset, FileDataset):
        return
    cache_file = None if cache_dir is None else Path(cache_dir) / _cache_name(dataset)
    cached = _read_cache(cache_file)
    fresh: dict[str, dict] = {}
    errors = []
    for index in tqdm(range(len(dataset)), desc="check data", disable=not progress):
        key, stamp = _key(dataset.pairs[index]), _stamp(dataset.pairs[index])
        entry = cached.get(key)
        if stamp is not None and isinstance(entry, dict) and entry.get("stamp") == stamp:
            error = entry.get("error")
        else:
            error = _check_one(dataset, index)
            if stamp is not None:  # a missing file has nothing to key its result on
                fresh[key] = {"stamp": stamp, "error": error}
        if error is not None:
            errors.append(error)
    if cache_file is not None and fresh:
        _write_cache(cache_file, {**cached, **fresh})
    if errors:
        raise DataError(_report(errors, len(dataset), dataset.where))


def _check_one(dataset: FileDataset, index: int) -> str | None:
    """The pair's problem as one line, or None if it is good."""
    try:
        dataset.check(index)
    except DataError as e:
        return str(e)
    return None


def _report(errors: list[str], total: int, where: str) -> str:
    lines = [f"{len(errors)} of {total} pairs in {where} are bad:"]
    lines += [f"  {e}" for e in errors[:MAX_LISTED]]
    if len(errors) > MAX_LISTED:
        lines.append(f"  ... and {len(errors) - MAX_LISTED} more")
    return "\n".join(lines)


def _cache_name(dataset: FileDataset) -> str:
    """One cache file per thing a result depends on besides the files: the dataset
    kind, its classes, colours and void (editing ``classes.txt`` starts afresh) and
    the pixel limit (an image refused under a lower one is read under a higher one)."""
    kind = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
    limit = default_max_pixels() if dataset.max_pixels is None else dataset.max_pixels
    key = (CHECK_VERSION, kind, dataset.info, limit)
    digest = hashlib.sha256(repr(key).encode()).hexdigest()
    return f"pairs-{digest[:16]}.json"


def _key(pair: tuple[Path, Path]) -> str:
    return "\n".join(os.path.abspath(p) for p in pair)


def _stamp(pair: tuple[Path, Path]) -> Stamp | None:
    """Sizes and mtimes of both files; None if either cannot be read."""
    try:
        stats = [os.stat(p) for p in pair]
    except OSError:
        return None
    return [v for st in stats for v in (st.st_size, st.st_mtime_ns)]


def _read_cache(path: Path | None) -> dict[str, dict]:
    """The cached results, or none if there is no cache or it cannot be read."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, dict]) -> None:
    """Replace the cache file atomically: concurrent runs never see half a file.

    The cache only saves time, so a folder that cannot be written is skipped.
    """
    with suppress(OSError):
        atomic_write(path, lambda f: f.write(json.dumps(entries).encode()))
