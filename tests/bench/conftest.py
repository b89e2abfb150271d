"""The bench scripts, imported as they import each other: by name, from bench/."""

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


@pytest.fixture
def bench_script(monkeypatch):
    """Import a bench script by its module name (``bench_script("fresh_clone")``)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module
