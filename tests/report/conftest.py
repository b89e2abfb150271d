import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.synthetic import CLASSES, COLORS, make_scene

TINY = ["--recipe", "synthetic-demo", "--dataset", "folder", "--width", "0.0625", "--pad", "1",
        "--crop", "32", "--batch-size", "2", "--iterations", "6", "--eval-every", "3",
        "--log-every", "1", "--warmup", "2", "--device", "cpu", "--quiet"]  # fmt: skip
"""A run of a few seconds: 6 logged losses, 2 validations."""


def run_quietly(argv: list[str]) -> str:
    """``fcnseg argv`` (it must succeed); what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return printed.getvalue()


def scenes_folder(root: Path, n: int) -> Path:
    """``n`` drawn scenes as a folder dataset (every 10th is val), a void frame on each mask."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, label = make_scene(1, i)
        label[:2] = 255
        Image.fromarray(image).save(root / "images" / f"s{i:03d}.png")
        Image.fromarray(label).save(root / "masks" / f"s{i:03d}.png")
    lines = [f"{name} {r} {g} {b}\n" for name, (r, g, b) in zip(CLASSES, COLORS, strict=True)]
    (root / "classes.txt").write_text("".join(lines))
    return root


@pytest.fixture(scope="package")
def run(tmp_path_factory) -> SimpleNamespace:
    """A tiny run trained through the CLI on 54 scenes, validated on 6: its folder
    (``path``) and what train ``printed``."""
    data = scenes_folder(tmp_path_factory.mktemp("scenes"), 60)
    path = tmp_path_factory.mktemp("run")
    printed = run_quietly(["train", "--out", str(path), "--data-root", str(data), *TINY])
    return SimpleNamespace(path=path, printed=printed)


@pytest.fixture(scope="package")
def report(run) -> Path:
    """``fcnseg report RUN_DIR`` of :func:`run`: the page, at its default path."""
    printed = run_quietly(["report", str(run.path), "--device", "cpu", "--examples", "3"])
    path = run.path / "report.html"
    assert f"report written to {path}" in printed
    return path
