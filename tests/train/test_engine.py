import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fcnseg.train.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.engine import StreamSampler, lr_factor, train
from fcnseg.train.recipes import RECIPES, get_recipe

TINY = TrainConfig(
    model="fcn8s", width=0.0625, batch_norm=True, dataset="synthetic", crop=48, batch_size=2,
    iterations=6, optimizer="sgd", lr=0.01, momentum=0.9, eval_every=1000, log_every=1,
)  # fmt: skip


def weights(path):
    return load_checkpoint(path)["model"]


def test_resume_is_exact(tmp_path):
    train(TINY, tmp_path / "full", progress=False)
    train(TINY, tmp_path / "split", progress=False, stop_after=3)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["iteration"] == 3
    train(TINY, tmp_path / "split", progress=False, resume=True)
    a, b = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "split" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logged = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").open()]
    assert [r["iteration"] for r in logged if "loss" in r] == [1, 2, 3, 4, 5, 6]
    # The stop really changed something: a run with another seed differs.
    train(TINY.replace(seed=1), tmp_path / "other", progress=False)
    c = weights(tmp_path / "other" / "last.pt")
    assert not torch.equal(a["fc6.weight"], c["fc6.weight"])


def test_stream_sampler_resumes_anywhere():
    full = StreamSampler(7, seed=3)
    items = [x for _, x in zip(range(30), iter(full), strict=False)]
    later = [x for _, x in zip(range(12), iter(StreamSampler(7, seed=3, start=18)), strict=False)]
    assert later == items[18:30]
    assert sorted(i for i, _ in items[:7]) == list(range(7))  # each epoch is a permutation


def test_lr_schedules():
    cfg = TrainConfig(iterations=100, warmup=10, schedule="poly", poly_power=1.0)
    assert lr_factor(cfg, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 50) == pytest.approx(0.5)
    assert lr_factor(cfg.replace(schedule="fixed"), 50) == 1.0


WRITER = """
import sys, torch
from fcnseg.train.checkpoint import save_checkpoint
i = 0
while True:
    t = torch.full((2_000_000,), float(i))
    save_checkpoint({"model": {"w": t}, "model_config": {}, "i": i}, sys.argv[1])
    i += 1
"""


def test_kill_during_checkpoint_write_leaves_a_good_file(tmp_path):
    path = tmp_path / "last.pt"
    for delay in (0.3, 0.55, 0.8, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)
        assert torch.equal(ckpt["model"]["w"], torch.full((2_000_000,), float(ckpt["i"])))
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(p.name.startswith(".last.pt.") for p in leftovers)  # torn temp files only


def test_killed_training_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fcnseg", "train", "--recipe", "synthetic-demo", "--out",
           str(out), "--width", "0.0625", "--crop", "48", "--batch-size", "2",
           "--quiet"]  # fmt: skip
    # Checkpoints are written at evaluations: evaluate at every step, kill in the middle.
    proc = subprocess.Popen([*cmd, "--iterations", "400", "--eval-every", "1"])
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    done = load_checkpoint(out / "last.pt")["iteration"]
    assert done >= 1
    more = ["--iterations", str(done + 2), "--eval-every", "1000000", "--resume"]
    resumed = subprocess.run([*cmd, *more], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "last.pt")["iteration"] == done + 2


def test_recipes_state_loss_and_lr():
    for name, cfg in RECIPES.items():
        assert cfg.lr > 0 and isinstance(cfg.normalize_loss, bool), name
    ref = get_recipe("voc-fcn32s")
    assert (ref.lr, ref.momentum, ref.normalize_loss, ref.batch_size) == (1e-10, 0.99, False, 1)
    assert get_recipe("voc-fcn8s").init_from.endswith("voc-fcn16s/best.pt")
    cfg = TrainConfig.from_dict(json.loads(get_recipe("camvid-fcn8s").to_json()))
    assert cfg == get_recipe("camvid-fcn8s")
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")


def test_checkpoint_roundtrip(tmp_path):
    save_checkpoint({"model": {"a": torch.ones(2)}, "model_config": {"x": 1}}, tmp_path / "c.pt")
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["a"], torch.ones(2))


def test_mixed_precision_training_runs(tmp_path):
    result = train(TINY.replace(precision="bf16", channels_last=True, iterations=2), tmp_path,
                   progress=False)  # fmt: skip
    assert 0 <= result["mean_iu"] <= 1
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert all(math.isfinite(r["loss"]) for r in logged if "loss" in r)


def test_batched_evaluation_equals_one_image_at_a_time():
    import fcnseg
    from fcnseg.train.engine import evaluate
    from fcnseg.train.metrics import ConfusionMatrix
    from tests.conftest import randomize_scores

    torch.manual_seed(0)
    model = randomize_scores(fcnseg.build_model("fcn8s", 3, width=0.125), std=0.5).eval()
    sizes = [(24, 32), (24, 32), (24, 32), (17, 23), (24, 32), (17, 23), (17, 23)]
    data = [(torch.randn(3, *s), torch.randint(0, 3, s)) for s in sizes]
    data[0][1][:5] = 255  # void pixels are not counted
    expected = ConfusionMatrix(3)
    with torch.inference_mode():
        for image, label in data:
            expected.update(model(image[None])[0].argmax(0), label)
    for batch_size, channels_last in [(1, False), (2, False), (3, True)]:
        metrics = evaluate(model, data, 3, torch.device("cpu"), batch_size=batch_size,
                           channels_last=channels_last, progress=False)  # fmt: skip
        for key, value in expected.compute().items():
            assert metrics[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
