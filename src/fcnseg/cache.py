"""Where fcnseg keeps files between runs: ``$XDG_CACHE_HOME/fcnseg`` (``~/.cache/fcnseg``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cached file (``checks``, ``onnx``); not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fcnseg" / kind
