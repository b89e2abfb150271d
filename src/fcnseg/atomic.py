"""Files replaced atomically: a kill at any moment leaves the old file or the new one.

The lowest layer of the package (beside :mod:`fcnseg.errors`): checkpoints, the
data-check cache, eval results and ONNX exports are all written this way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """A new, empty temp file ``.<name>.<random>.tmp`` beside ``path`` for the block
    to fill; when the block succeeds it is fsynced and renamed over ``path``, when it
    fails it is removed. Only a kill can leave a (torn) temp file, which
    :class:`~fcnseg.train.run.RunFolder` clears. The file gets the permissions a
    plain ``open(path, "w")`` would give it, not ``tempfile.mkstemp``'s 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename makes it the file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` atomically (:func:`replaced_atomically`): ``write`` fills the file."""
    with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        write(f)


_NAME_MAX = 255  # bytes in a file name: ext4, APFS, NTFS


def _create_temp(path: Path) -> Path:
    """Create ``.<name>.<random>.tmp`` beside ``path`` as ``open()`` creates files
    (mode 0o666 less the umask). A name within 14 bytes of the limit is cut short
    there, so any file that can be written can be written atomically."""
    room = _NAME_MAX - len(".." + "0" * 8 + ".tmp")  # the dots, the random hex, the suffix
    name = path.name.encode()[:room].decode(errors="ignore")
    while True:
        tmp = path.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # a name drawn twice: draw again
            continue
