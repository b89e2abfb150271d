"""Two gloo processes under torchrun against one process on the same global batch."""

import os
import subprocess
import sys

import pytest
import torch

from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import eval_transform
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from fcnseg.train.engine import evaluate, train
from fcnseg.train.recipes import get_recipe

ARGS = {  # no batch norm (per-rank statistics on CPU); dropout on: its masks follow the samples
    "width": 0.0625, "batch_norm": False, "dropout": 0.5, "crop": 48, "batch_size": 4,
    "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "fixed", "warmup": 0,
    "eval_every": 1000, "log_every": 1,
}  # fmt: skip


def cli_args(**overrides):
    args = []
    for key, value in {**ARGS, **overrides}.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def torchrun(out, nproc, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "fcnseg", "train", "--recipe", "synthetic-demo",
           "--quiet", "--out", str(out), *extra]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def assert_same_weights(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    train(get_recipe("synthetic-demo").replace(**ARGS, iterations=4), out, progress=False)
    return load_checkpoint(out / "last.pt")


def test_two_ranks_equal_one_process(single, tmp_path):
    """With dropout 0.5: each sample draws its masks from its own seed on any rank."""
    torchrun(tmp_path, 2, *cli_args(iterations=4))
    ddp = load_checkpoint(tmp_path / "last.pt")
    assert ddp["iteration"] == 4
    assert ddp["model"]["score_fr.weight"].abs().sum() > 0  # training moved the weights
    assert_same_weights(ddp["model"], single["model"])
    # Distributed evaluation (each rank half the images, matrices summed) is exact.
    model, _ = model_from_checkpoint(ddp)
    val = build_dataset("synthetic", None, "val", eval_transform())
    expected = evaluate(model, val, 5, torch.device("cpu"), progress=False)
    assert ddp["metrics"] == expected


def test_resume_on_fewer_ranks(single, tmp_path):
    torchrun(tmp_path, 2, *cli_args(iterations=2))
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2
    cfg = get_recipe("synthetic-demo").replace(**ARGS, iterations=4)
    train(cfg, tmp_path, resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "last.pt")
    assert resumed["iteration"] == 4
    assert_same_weights(resumed["model"], single["model"])


def test_batch_must_divide_over_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "fcnseg", "train", "--quiet", "--out", str(tmp_path),
           *cli_args(batch_size=3, iterations=1)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0 and "must divide by 2 ranks" in result.stderr


def test_one_failing_rank_stops_the_job(tmp_path):
    """A truncated image read by one rank only: the job ends with its error, no hang."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "data"
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    (root / "classes.txt").write_text("a 0 0 0\nb 255 255 255\n")
    for name in ("x", "y"):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "masks" / f"{name}.png")
    data = (root / "images" / "y.png").read_bytes()
    (root / "images" / "y.png").write_bytes(data[:50])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "fcnseg", "train", "--quiet", "--out", str(tmp_path / "run"),
           "--dataset", "folder", "--data-root", str(root), "--train-split", "all",
           "--val-split", "all", *cli_args(batch_size=2, iterations=3, crop=32)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert "y.png: cannot read image" in result.stderr


def test_train_leaves_the_callers_process_group(tmp_path):
    """A group the caller created stays usable after training (only what train joined
    itself, it leaves)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        cfg = get_recipe("synthetic-demo").replace(**{**ARGS, "batch_size": 2}, iterations=1)
        train(cfg, tmp_path, progress=False)
        assert dist.is_initialized()
        dist.barrier()
    finally:
        dist.destroy_process_group()
