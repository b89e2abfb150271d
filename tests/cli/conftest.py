import json

import pytest

from fcnseg.cli import main

TINY = ["--width", "0.0625", "--crop", "48", "--batch-size", "2", "--iterations", "4",
        "--eval-every", "4", "--quiet"]  # fmt: skip
"""Flags that make ``fcnseg train --recipe synthetic-demo`` take a few seconds."""


@pytest.fixture(scope="package")
def checkpoint(tmp_path_factory):
    """A tiny synthetic-demo run trained through the CLI: its ``best.pt``."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--recipe", "synthetic-demo", "--out", str(out), *TINY]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["iterations"] == 4 and cfg["width"] == 0.0625 and cfg["model"] == "fcn8s"
    assert (out / "metrics.jsonl").read_text().count("\n") >= 2
    return out / "best.pt"
