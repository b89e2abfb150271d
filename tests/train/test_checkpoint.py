import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fcnseg.atomic import atomic_write
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.train.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.engine import train

TINY = TrainConfig(
    model="fcn32s", width=0.0625, dataset="synthetic", crop=32, batch_size=2, iterations=1,
    optimizer="sgd", eval_every=1,
)  # fmt: skip

SIZE = 2_000_000  # 8 MB: a save takes long enough to be killed in the middle

WRITER = f"""
import sys, torch
from fcnseg.train.checkpoint import save_checkpoint
i = 0
while True:
    save_checkpoint({{"model": {{"w": torch.full(({SIZE},), float(i))}}, "model_config": {{}},
                     "i": i}}, sys.argv[1])
    i += 1
"""


def test_roundtrip(tmp_path):
    save_checkpoint({"model": {"a": torch.ones(2)}, "model_config": {"x": 1}}, tmp_path / "c.pt")
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


def test_copies_are_the_same_bytes_serialised_once(tmp_path, monkeypatch):
    saves = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda *a, **k: saves.append(1) or real_save(*a, **k))
    ckpt = {"model": {"a": torch.arange(5.0)}, "model_config": {"x": 1}}
    save_checkpoint(ckpt, tmp_path / "last.pt", tmp_path / "best.pt", tmp_path / "iter_5.pt")
    assert len(saves) == 1
    data = (tmp_path / "last.pt").read_bytes()
    assert (tmp_path / "best.pt").read_bytes() == data == (tmp_path / "iter_5.pt").read_bytes()
    assert torch.equal(load_checkpoint(tmp_path / "iter_5.pt")["model"]["a"], torch.arange(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "iter_5.pt", "last.pt"]


def _size(path) -> int:
    """The size of ``path``; 0 once it is gone (renamed over the checkpoint)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _temps(folder) -> list:
    return list(folder.glob(".last.pt.*.tmp"))


def _kill_mid_write(path) -> None:
    """Start the writer, wait until it has written into a new version over a complete
    one (a temp file with bytes in it, not only created), kill it."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    deadline = time.time() + 120
    while not (path.exists() and any(_size(t) > 0 for t in _temps(path.parent))):
        assert time.time() < deadline and proc.poll() is None, "the writer never wrote"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _is_torn(tmp) -> bool:
    """A temp file cut off mid-write: some bytes, but not a readable checkpoint."""
    if _size(tmp) == 0:  # killed between creating and writing it: nothing was cut
        return False
    try:
        torch.load(tmp)
    except (RuntimeError, EOFError, OSError):  # a truncated zip (torch says EINVAL), or less
        return True
    return False


def test_kill_during_write_leaves_the_old_or_new_file(tmp_path):
    path = tmp_path / "last.pt"
    torn = 0
    for _ in range(3):
        _kill_mid_write(path)
        ckpt = load_checkpoint(path)  # never torn
        assert torch.equal(ckpt["model"]["w"], torch.full((SIZE,), float(ckpt["i"])))
        temps = _temps(tmp_path)
        assert [p for p in tmp_path.iterdir() if p != path and p not in temps] == []
        torn += sum(_is_torn(t) for t in temps)
        for t in temps:
            t.unlink()
    assert torn >= 1  # the kills did land mid-write, after bytes went into the temp file


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_mode_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "plain").write_bytes(b"x")
        atomic_write(tmp_path / "atomic", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    modes = [stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("plain", "atomic")]
    assert modes == [0o666 & ~umask] * 2


def test_checkpoints_hold_no_numpy_and_old_ones_still_load(tmp_path, monkeypatch):
    monkeypatch.setitem(SyntheticDataset.SIZES, "val", 4)
    train(TINY, tmp_path / "run", progress=False)
    # Plain torch.load with weights_only: tensors and Python data, nothing else.
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 1
    # Checkpoints written before the sample stream held numpy's RNG state.
    old = {**ckpt, "rng": {"numpy": np.random.RandomState(0).get_state()}}
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")["rng"]["numpy"]
    np.testing.assert_array_equal(loaded[1], old["rng"]["numpy"][1])
