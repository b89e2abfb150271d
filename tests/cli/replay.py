"""Replays what a new user tripped on (issue #9, section 2) through the real ``fcnseg`` command.

Each case runs ``python -m fcnseg ...`` in a fresh folder and checks what a user
would see: the exit code, one line on stderr naming the flag or file (never a
traceback), and that none of the user's files changed. Run it alone::

    python tests/cli/replay.py            # every case, a line each (from the repo root)
    python tests/cli/replay.py onnx-cache # some cases

``tests/cli/test_replay.py`` runs the same cases under pytest. Case 2.11 (dropout
across ranks) needs torchrun: ``tests/train/test_distributed.py`` covers it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

TINY = ["--recipe", "synthetic-demo", "--width", "0.0625", "--crop", "48", "--batch-size", "2",
        "--iterations", "2", "--eval-every", "2", "--quiet"]  # fmt: skip
CASES: dict[str, Callable[[Path], None]] = {}


def case(name: str):
    def register(func: Callable[[Path], None]) -> Callable[[Path], None]:
        CASES[name] = func
        return func

    return register


class Failed(AssertionError):
    pass


def fcnseg(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "fcnseg", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        raise Failed(f"exit {result.returncode}: {result.stderr[-2000:]}")
    return result


def refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """The command failed with exit 2 and one line that names every one of ``names``."""
    err = result.stderr.strip()
    if result.returncode != 2:
        raise Failed(f"expected exit 2, got {result.returncode}: {err[-2000:]}")
    if "Traceback" in err or not err.startswith("fcnseg: error: "):
        raise Failed(f"not one clear line: {err[-2000:]}")
    missing = [n for n in names if n not in err]
    if missing:
        raise Failed(f"the message does not name {missing}: {err}")
    return err


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def unchanged(before: dict[str, str], folder: Path, what: str) -> None:
    after = digest(folder)
    changed = sorted(k for k in before if after.get(k) != before[k])
    if changed:
        raise Failed(f"{what} changed: {changed}")


def photos(folder: Path, names: list[str], size=(24, 32)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)


def trained(tmp: Path, name: str = "run", *extra: str) -> Path:
    ok(fcnseg("train", *TINY, "--out", str(tmp / name), *extra, cwd=tmp))
    return tmp / name


def folder_dataset(root: Path, n: int, *, classes: int = 3, size=(20, 24)) -> Path:
    """``n`` image/mask pairs with a classes.txt of ``classes`` classes."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "images" / f"{i:03d}.png"
        )
        Image.fromarray(rng.integers(0, classes, size, dtype=np.uint8)).save(
            root / "masks" / f"{i:03d}.png"
        )
    (root / "classes.txt").write_text("".join(f"c{k} {k} {k} {k}\n" for k in range(classes)))
    return root


# 2.1 predict never overwrites an input, never writes two outputs to one file.
@case("predict-into-inputs")
def _(tmp: Path) -> None:
    run = trained(tmp)
    photos(tmp / "photos", ["a.png", "b.png"])
    before = digest(tmp / "photos")
    refused(fcnseg("predict", str(run / "best.pt"), "photos", "--out", "photos", cwd=tmp))
    unchanged(before, tmp / "photos", "the input photos")


@case("predict-name-clash")
def _(tmp: Path) -> None:
    run = trained(tmp)
    photos(tmp / "x", ["a.jpg", "a.png"])
    photos(tmp / "y", ["a.png"])
    result = ok(fcnseg("predict", str(run / "best.pt"), "x", "y", "--out", "out", "--no-overlay",
                       cwd=tmp))  # fmt: skip
    written = [p for p in (tmp / "out").rglob("*") if p.is_file()]
    if len(written) != 3:
        raise Failed(f"3 inputs gave {len(written)} outputs: {written}")
    if "3" not in result.stdout:
        raise Failed(f"the summary does not count 3: {result.stdout}")


# 2.2 the onnxruntime backend follows the checkpoint it is given.
def retrained(ckpt: Path) -> None:
    """Replace ``ckpt`` by a model that predicts otherwise: its score layers random.
    Two tiny runs both predict class 0 everywhere, so a stale export would pass."""
    import torch

    from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
    from tests.conftest import randomize_scores

    state = load_checkpoint(ckpt)
    model, _ = model_from_checkpoint(state)
    torch.manual_seed(1)
    randomize_scores(model, std=0.1)
    torch.save({**state, "model": model.state_dict()}, ckpt)


def exported_for(onnx: Path) -> str:
    """The checkpoint sha256 that an ONNX export's metadata names ("" for none)."""
    from fcnseg.deploy.export import CHECKPOINT_SHA256, OnnxModel

    return OnnxModel(onnx).metadata.get(CHECKPOINT_SHA256, "")


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    if a.keys() != b.keys():
        raise Failed(f"different outputs: {sorted(a)} vs {sorted(b)}")
    return min(float((a[k] == b[k]).mean()) for k in a)


@case("onnx-cache")
def _(tmp: Path) -> None:
    photos(tmp / "photos", ["a.png", "b.png"])
    ckpt = tmp / "model.pt"
    shutil.copy(trained(tmp) / "best.pt", ckpt)
    onnx = ckpt.with_suffix(".onnx")

    def predict(backend: str, out: str) -> dict[str, np.ndarray]:
        ok(fcnseg("predict", str(ckpt), "photos", "--no-overlay", "--backend", backend,
                  "--out", out, cwd=tmp))  # fmt: skip
        return {p.name: np.asarray(Image.open(p)) for p in sorted((tmp / out).iterdir())}

    def keyed_to_checkpoint() -> None:
        if exported_for(onnx) != hashlib.sha256(ckpt.read_bytes()).hexdigest():
            raise Failed(f"{onnx.name} is not the export of the current {ckpt.name}")

    old = predict("onnxruntime", "ort-old")
    keyed_to_checkpoint()
    retrained(ckpt)  # the user retrains: model.pt is replaced
    new = predict("torch", "torch-new")
    if agreement(new, old) > 0.9:
        raise Failed("the new checkpoint predicts like the old one: the case would not notice")
    if agreement(predict("onnxruntime", "ort-new"), new) < 0.99:
        raise Failed("onnxruntime predictions come from the old checkpoint")
    keyed_to_checkpoint()
    onnx.write_bytes(b"not an onnx file")  # a corrupt cache is exported again
    if agreement(predict("onnxruntime", "ort-corrupt"), new) < 0.99:
        raise Failed("onnxruntime predictions after a corrupt cache differ from torch")
    keyed_to_checkpoint()


# 2.3 a run folder is protected.
@case("train-existing-run")
def _(tmp: Path) -> None:
    run = trained(tmp)
    before = digest(run)
    refused(fcnseg("train", *TINY, "--out", str(run), cwd=tmp), "--resume", "--overwrite")
    unchanged(before, run, "the existing run")
    ok(fcnseg("train", *TINY, "--out", str(run), "--overwrite", cwd=tmp))


@case("train-bad-data-keeps-run")
def _(tmp: Path) -> None:
    data = folder_dataset(tmp / "data", 20)
    args = ["train", *TINY, "--dataset", "folder", "--data-root", str(data), "--out", "run"]
    ok(fcnseg(*args, cwd=tmp))
    before = digest(tmp / "run")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(data / "masks" / "004.png")  # wrong size
    refused(fcnseg(*args, "--overwrite", cwd=tmp), "004.png")
    unchanged(before, tmp / "run", "the previous run")


@case("train-two-at-once")
def _(tmp: Path) -> None:
    long = ["train", *TINY, "--iterations", "100000", "--out", "run"]
    first = subprocess.Popen([sys.executable, "-m", "fcnseg", *long], cwd=tmp,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (tmp / "run" / "config.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        refused(fcnseg("train", *TINY, "--out", "run", "--overwrite", cwd=tmp), "run")
    finally:
        first.kill()
        first.wait()
    leftovers = [p.name for p in (tmp / "run").iterdir() if p.name.endswith(".tmp")]
    if len(leftovers) > 1:
        raise Failed(f"temp files pile up: {leftovers}")


# 2.4 class counts are checked.
@case("eval-class-mismatch")
def _(tmp: Path) -> None:
    run = trained(tmp)  # 5 synthetic classes
    data = folder_dataset(tmp / "data", 12, classes=3)
    base = ["eval", str(run / "best.pt"), "--dataset", "folder", "--data-root", str(data),
            "--split", "all"]  # fmt: skip
    refused(fcnseg(*base, cwd=tmp), "class")
    ok(fcnseg(*base, "--allow-class-mismatch", cwd=tmp))


# 2.5 a decompression bomb is refused before decoding.
@case("predict-huge-image")
def _(tmp: Path) -> None:
    run = trained(tmp)
    (tmp / "photos").mkdir()
    Image.new("1", (20000, 20000)).save(tmp / "photos" / "bomb.png")
    refused(fcnseg("predict", str(run / "best.pt"), "photos", "--out", "out", cwd=tmp),
            "bomb.png")  # fmt: skip


# 2.6 every pair is checked before training; all bad files at once.
@case("train-bad-data-up-front")
def _(tmp: Path) -> None:
    data = folder_dataset(tmp / "data", 20)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(data / "masks" / "003.png")
    Image.fromarray(np.full((20, 24), 9, np.uint8)).save(data / "masks" / "011.png")
    (data / "images" / "015.png").write_bytes((data / "images" / "015.png").read_bytes()[:80])
    result = fcnseg("train", *TINY, "--dataset", "folder", "--data-root", str(data), "--out",
                    "run", cwd=tmp)  # fmt: skip
    if result.returncode != 2 or "Traceback" in result.stderr:
        raise Failed(f"exit {result.returncode}: {result.stderr[-2000:]}")
    missing = [n for n in ("003.png", "011.png", "015.png") if n not in result.stderr]
    if missing:
        raise Failed(f"not reported: {missing}: {result.stderr}")
    if (tmp / "run" / "last.pt").exists():
        raise Failed("training started on bad data")


# 2.7 --resume reads the run's config.
@case("resume-reads-config")
def _(tmp: Path) -> None:
    run = trained(tmp, "run", "--width", "0.125")
    ok(fcnseg("train", "--resume", "--out", str(run), "--iterations", "3", "--quiet", cwd=tmp))
    refused(fcnseg("train", "--resume", "--out", str(run), "--width", "0.25", cwd=tmp), "width")
    result = ok(fcnseg("train", "--resume", "--out", str(run), "--quiet", cwd=tmp))
    if "finished" not in (result.stdout + result.stderr).lower():
        raise Failed(f"resuming a finished run does not say so: {result.stdout}")


# 2.8 flags out of range: one line naming the flag.
BAD_FLAGS = [
    (["--iterations", "0"], "iterations"),
    (["--iterations", "-5"], "iterations"),
    (["--crop", "0"], "crop"),
    (["--crop", "-8"], "crop"),
    (["--eval-every", "0"], "eval"),
    (["--eval-every", "-1"], "eval"),
    (["--accumulate", "0"], "accumulate"),
    (["--precision", "fp8"], "precision"),
    (["--width", "0"], "width"),
    (["--width", "-1"], "width"),
    (["--schedule", "foo"], "schedule"),
    (["--class-weighting", "medain"], "class"),
    (["--scale", "2", "1"], "scale"),
]


@case("train-bad-flags")
def _(tmp: Path) -> None:
    for flags, name in BAD_FLAGS:
        refused(fcnseg("train", *TINY, *flags, "--out", "run", cwd=tmp), name)
        if (tmp / "run").exists():
            raise Failed(f"{flags} created the run folder")


@case("device-and-export")
def _(tmp: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        refused(fcnseg("train", *TINY, "--device", "cuda", "--out", "run", cwd=tmp), "cuda")
    run = trained(tmp)
    ok(fcnseg("export", str(run / "best.pt"), "missing/folder/model.onnx", cwd=tmp))


# 2.9 an empty split says which.
@case("empty-val-split")
def _(tmp: Path) -> None:
    data = folder_dataset(tmp / "data", 6)
    refused(fcnseg("train", *TINY, "--dataset", "folder", "--data-root", str(data), "--out",
                   "run", cwd=tmp), "val")  # fmt: skip


# 2.10 the VOC recipes: train on SBD, validate on VOC2011's seg11valid (two roots).
@case("voc-recipe-two-roots")
def _(tmp: Path) -> None:
    from tests.data.test_voc import sbd_tree, voc_tree

    sbd, voc = sbd_tree(tmp / "benchmark_RELEASE" / "dataset"), voc_tree(tmp / "VOC2011")
    args = ["train", "--recipe", "voc-fcn32s", "--data-root", str(sbd), "--backbone-weights",
            "none", "--width", "0.0625", "--iterations", "1", "--quiet"]  # fmt: skip
    refused(fcnseg(*args, "--out", "run", cwd=tmp), "--val-root")
    ok(fcnseg(*args, "--val-root", str(voc), "--out", "run", cwd=tmp))
    result = ok(fcnseg("eval", "run/best.pt", cwd=tmp))
    if "voc/seg11valid: 3 images" not in result.stdout:
        raise Failed(f"not validated on VOC2011 seg11valid: {result.stdout}")


# Found by review after section 2 was fixed: outputs that would replace a user's file.
@case("outputs-over-user-files")
def _(tmp: Path) -> None:
    run = trained(tmp)
    before = digest(run)
    refused(fcnseg("eval", str(run / "best.pt"), "--json", str(run / "best.pt"), cwd=tmp),
            "--json", "best.pt")  # fmt: skip
    refused(fcnseg("export", str(run / "best.pt"), str(run / "last.pt"), cwd=tmp), "last.pt")
    unchanged(before, run, "the run's checkpoints")
    (tmp / "afile").write_text("mine")
    photos(tmp / "photos", ["a.png"])
    refused(fcnseg("predict", str(run / "best.pt"), "photos", "--out", "afile", cwd=tmp),
            "afile")  # fmt: skip
    if (tmp / "afile").read_text() != "mine":
        raise Failed("--out replaced a file")


@case("runs-and-flags-found-by-review")
def _(tmp: Path) -> None:
    (tmp / "half").mkdir()
    (tmp / "half" / "config.json").write_text("{}")  # a run killed before its first checkpoint
    refused(fcnseg("train", *TINY, "--out", "half", cwd=tmp), "--overwrite")
    run = trained(tmp)
    refused(fcnseg("train", "--resume", "--recipe", "synthetic-demo", "--out", str(run),
                   cwd=tmp), "--recipe")  # fmt: skip
    refused(fcnseg("train", *TINY, "--precision", "fp16", "--device", "cpu", "--out", "f",
                   cwd=tmp), "fp16")  # fmt: skip
    refused(fcnseg("eval", str(run / "best.pt"), "--data-root", "nowhere", cwd=tmp),
            "--data-root")  # fmt: skip
    data = folder_dataset(tmp / "data", 12)
    shutil.copy(data / "images" / "004.png", data / "images" / "004.jpg")
    refused(fcnseg("train", *TINY, "--dataset", "folder", "--data-root", str(data), "--out",
                   "g", cwd=tmp), "004.jpg", "004.png")  # fmt: skip


def run_case(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        CASES[name](Path(tmp))


def main(names: list[str]) -> int:
    failed = 0
    for name in names or list(CASES):
        tic = time.time()
        try:
            run_case(name)
            status = "fixed"
        except Failed as e:
            failed += 1
            status = f"FAILS: {e}"
        print(f"{name:<32} {time.time() - tic:5.1f} s  {status}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.data fixtures
    sys.exit(main(sys.argv[1:]))
