"""Label maps stored as MATLAB files, as NYUDv2, SIFT Flow and PASCAL-Context ship them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fcnseg.data.dataset import read_list
from fcnseg.data.info import IGNORE_INDEX, DataError


def read_mat_array(path: Path, key: str, what: str) -> np.ndarray:
    """The 2-D array ``key`` of the .mat file ``path`` (``what`` it is, for messages).

    Raises:
        DataError: no such file, not a MATLAB file, no such variable, not 2-D.
    """
    from scipy.io import loadmat

    if not Path(path).is_file():  # scipy would try the name with ".mat" appended
        raise DataError(f"{path}: no such file")
    try:
        mat = loadmat(path, variable_names=[key])
    except Exception as e:  # scipy raises many types for files that are not .mat
        raise DataError(f"{path}: not a MATLAB .mat file ({type(e).__name__}: {e})") from None
    if key not in mat:
        raise DataError(f"{path}: holds no variable {key!r} ({what})")
    array = np.asarray(mat[key])
    if array.ndim != 2:
        raise DataError(f"{path}: {key!r} has shape {array.shape}; expected a 2-D {what}")
    return array


def one_based(
    raw: np.ndarray, num_classes: int, where: str, void: Sequence[int] = (0,)
) -> np.ndarray:
    """Classes stored as 1..n -> 0..n-1, the ``void`` values -> 255, as uint8 (H, W).

    Raises:
        DataError: naming ``where``, for a value that is neither a class nor void.
    """
    raw = np.asarray(raw, dtype=np.int64)
    bad = ~np.isin(raw, void) & ((raw < 1) | (raw > num_classes))
    if bad.any():
        values = np.unique(raw[bad])[:5].tolist()
        raise DataError(
            f"{where}: label values {values} are neither classes 1..{num_classes} "
            f"nor void ({', '.join(map(str, void))})"
        )
    return np.where(np.isin(raw, void), IGNORE_INDEX, raw - 1).astype(np.uint8)


def read_lists(root: Path, split: str) -> list[str]:
    """The names of ``root/<split>.txt``; ``a+b`` joins the lists ``a`` and ``b`` in order."""
    return [name for part in split.split("+") for name in read_list(root / f"{part}.txt")]
