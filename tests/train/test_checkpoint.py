import os
import signal
import subprocess
import sys
import time

import torch

from fcnseg.train.checkpoint import load_checkpoint, save_checkpoint

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


def _kill_mid_write(path) -> None:
    """Start the writer, wait until it is writing a new version over a complete one, kill it."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    deadline = time.time() + 120
    while not (path.exists() and any(path.parent.glob(".last.pt.*.tmp"))):
        assert time.time() < deadline and proc.poll() is None, "the writer never wrote"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _is_torn(tmp) -> bool:
    """A temp file cut off mid-write: not a readable checkpoint."""
    try:
        torch.load(tmp)
    except (RuntimeError, EOFError):  # a truncated zip archive, or not even its header
        return True
    return False


def test_kill_during_write_leaves_the_old_or_new_file(tmp_path):
    path = tmp_path / "last.pt"
    torn = 0
    for _ in range(3):
        _kill_mid_write(path)
        ckpt = load_checkpoint(path)  # never torn
        assert torch.equal(ckpt["model"]["w"], torch.full((SIZE,), float(ckpt["i"])))
        temps = list(tmp_path.glob(".last.pt.*.tmp"))
        assert [p for p in tmp_path.iterdir() if p != path and p not in temps] == []
        torn += sum(_is_torn(t) for t in temps)
        for t in temps:
            t.unlink()
    assert torn >= 1  # the kills did land mid-write
