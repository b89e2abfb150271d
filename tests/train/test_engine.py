import json
import math
import random
import shutil
import subprocess
import sys
import time
import warnings

import pytest
import torch

import fcnseg.train.config as config
import fcnseg.train.engine as engine
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.data.transforms import eval_transform
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.device import EmulatedBf16Warning
from fcnseg.train.engine import StreamSampler, evaluate, lr_factor, train
from fcnseg.train.loss import enet_weights, median_frequency_weights
from fcnseg.train.recipes import RECIPES, get_recipe

TINY = TrainConfig(
    model="fcn8s", width=0.0625, batch_norm=True, dataset="synthetic", crop=48, batch_size=2,
    iterations=6, optimizer="sgd", lr=0.01, momentum=0.9, eval_every=1000, log_every=1,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _small_val(monkeypatch):
    """10 validation scenes instead of 100: evaluation is most of a tiny run's time."""
    monkeypatch.setitem(SyntheticDataset.SIZES, "val", 10)


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b, **tolerance):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k, **tolerance)


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").open()]


def logged(out, kind):
    """The iterations of the ``kind`` records ("loss" or "eval") in ``out/metrics.jsonl``."""
    return [r["iteration"] for r in records(out) if kind in r]


def test_resume_is_exact_and_logs_each_iteration_once(tmp_path):
    """With dropout and batch norm on; a run stopped between a log line and its
    checkpoint logs the iterations after the checkpoint again, and only once."""
    rng = torch.get_rng_state(), random.getstate()
    train(TINY, tmp_path / "full", progress=False)
    # The run uses its own seeds: the caller's RNGs are as they were.
    assert torch.equal(torch.get_rng_state(), rng[0]) and random.getstate() == rng[1]
    split = tmp_path / "split"
    train(TINY.replace(eval_every=2), split, progress=False, stop_after=2)
    at_two = split / "at_two.pt"
    shutil.copy(split / "last.pt", at_two)
    train(TINY.replace(eval_every=2), split, progress=False, stop_after=4, resume=True)
    # Killed after logging iterations 3 and 4 but before last.pt was replaced:
    shutil.copy(at_two, split / "last.pt")
    assert logged(split, "loss") == [1, 2, 3, 4]
    train(TINY.replace(eval_every=2), split, progress=False, resume=True)
    assert_same_weights(weights(tmp_path / "full" / "last.pt"), weights(split / "last.pt"),
                        rtol=0, atol=0)  # fmt: skip
    assert logged(split, "loss") == [1, 2, 3, 4, 5, 6]
    assert logged(split, "eval") == [2, 4, 6]
    # The stop really changed something: a run with another seed differs.
    train(TINY.replace(seed=1), tmp_path / "other", progress=False)
    a, c = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "other" / "last.pt")
    assert not torch.equal(a["fc6.weight"], c["fc6.weight"])


def test_dropout_masks_follow_the_sample_not_the_batch():
    """SampleDropout: a sample's mask depends on its seed only, differs between seeds
    and layers, and keeps the expected share of units."""
    import fcnseg

    model = fcnseg.build_model("fcn32s", 3, width=0.0625, dropout=0.5).train()
    x = torch.rand(3, 64, 5, 5) + 1  # positive: every zero is a dropped unit
    seeds = torch.tensor([11, 12, 11])
    y = model.drop6(x, seeds)
    kept = y != 0
    assert torch.equal(kept[0], kept[2]) and not torch.equal(kept[0], kept[1])
    assert torch.equal(model.drop6(x[1:2], seeds[1:2]), y[1:2])  # alone or in a batch
    assert not torch.equal(model.drop7(x, seeds) != 0, kept)  # the layers draw different masks
    assert 0.45 < kept.float().mean().item() < 0.55
    torch.testing.assert_close(y[y != 0], (2 * x)[y != 0])  # survivors scaled by 1 / (1 - p)
    assert torch.equal(model.eval().drop6(x, seeds), x)


def test_accumulation_equals_a_larger_batch(tmp_path):
    """accumulate x batch_size images per update, with normalize_loss the mean over all
    their valid pixels (small crops pad with void, so the micro-batches' pixel counts
    differ), without it their sum: both the same update as one batch of all of them."""
    base = TINY.replace(batch_norm=False, scale=(0.3, 0.5), iterations=3, lr=0.05)
    for i, cfg in enumerate([base, base.replace(normalize_loss=False, lr=2e-5)]):
        train(cfg.replace(batch_size=4), tmp_path / f"one{i}", progress=False)
        train(cfg.replace(batch_size=2, accumulate=2), tmp_path / f"acc{i}", progress=False)
        a, b = weights(tmp_path / f"one{i}" / "last.pt"), weights(tmp_path / f"acc{i}" / "last.pt")
        assert not torch.equal(a["score_fr.weight"], torch.zeros_like(a["score_fr.weight"]))
        assert_same_weights(a, b, rtol=1e-4, atol=1e-6)
        losses = [[r["loss"] for r in records(tmp_path / f"{run}{i}") if "loss" in r]
                  for run in ("one", "acc")]  # fmt: skip
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_workers_resume_exactly(tmp_path):
    """Decoding in worker processes changes nothing: the samples carry their seeds."""
    cfg = TINY.replace(iterations=4)
    train(cfg, tmp_path / "inline", progress=False)
    train(cfg.replace(workers=2), tmp_path / "workers", progress=False, stop_after=2)
    train(cfg.replace(workers=1), tmp_path / "workers", progress=False, resume=True)
    assert_same_weights(weights(tmp_path / "inline" / "last.pt"),
                        weights(tmp_path / "workers" / "last.pt"), rtol=0, atol=0)  # fmt: skip


def _hooked(monkeypatch, edit):
    """Make the engine's model builder apply ``edit`` to each model it builds."""
    build = engine.make_model

    def make_model(cfg, num_classes, *, pretrained=True):
        model = build(cfg, num_classes, pretrained=pretrained)
        edit(model)
        return model

    monkeypatch.setattr(engine, "make_model", make_model)


@pytest.mark.filterwarnings("ignore::fcnseg.train.device.EmulatedBf16Warning")  # on AVX2
def test_bf16_training_computes_in_bf16(tmp_path, monkeypatch):
    seen = []

    def record_fc6(model):
        def hook(module, args, out):
            seen.append((model.training, out.dtype))

        model.fc6.register_forward_hook(hook)

    _hooked(monkeypatch, record_fc6)
    cfg = TINY.replace(precision="bf16", channels_last=True, iterations=2, batch_norm=False)
    result = train(cfg, tmp_path, progress=False)
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert 0 <= result["mean_iu"] <= 1
    assert all(math.isfinite(r["loss"]) for r in records(tmp_path) if "loss" in r)
    assert load_checkpoint(tmp_path / "last.pt")["model"]["fc6.weight"].dtype == torch.float32


@pytest.mark.parametrize(
    ("precision", "flags", "expected", "warns"),
    [("auto", "avx2", "fp32", False), ("auto", "avx2 avx512_bf16", "bf16", False),
     ("bf16", "avx2", "bf16", True), ("bf16", "avx2 amx_bf16", "bf16", False)],
)  # fmt: skip
def test_precision_follows_the_cpu_and_is_recorded(
    tmp_path, monkeypatch, cpu_with, precision, flags, expected, warns
):
    """``auto`` is made concrete from the CPU's flags (config.json and the checkpoint say
    which ran); bf16 emulated on a CPU without native bf16 is warned of."""
    cpu_with(flags)
    seen = []
    _hooked(monkeypatch, lambda m: m.fc6.register_forward_hook(
        lambda module, args, out: seen.append(out.dtype) if module.training else None))  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(TINY.replace(precision=precision, iterations=1, batch_norm=False),
              tmp_path / "run", progress=False)  # fmt: skip
    assert set(seen) == {getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[expected])}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == expected
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_config"]["precision"] == expected
    ours = [w for w in caught if w.category is EmulatedBf16Warning]
    assert len(ours) == warns and {w.filename for w in ours} <= {__file__}  # the caller's line


def spy(monkeypatch, fn, name: str) -> list:
    """Wrap the engine's ``fn``; returns the list of the ``name`` keyword of each call."""
    seen = []

    def wrapped(*args, **kwargs):
        seen.append(kwargs[name])
        return fn(*args, **kwargs)

    monkeypatch.setattr(engine, fn.__name__, wrapped)
    return seen


def test_color_jitter_and_label_smoothing_reach_the_data_and_the_loss(tmp_path, monkeypatch):
    seen = {
        "jitter": spy(monkeypatch, engine.train_transform, "color_jitter"),
        "smoothing": spy(monkeypatch, engine.heads_loss, "label_smoothing"),
    }
    cfg = TINY.replace(iterations=1, color_jitter=0.3, label_smoothing=0.1, eval_every=1)
    train(cfg, tmp_path, progress=False)
    assert seen == {"jitter": [0.3], "smoothing": [0.1]}
    assert all(math.isfinite(r["loss"]) for r in records(tmp_path) if "loss" in r)


def test_val_normalization_validates_and_is_saved_for_deployment(tmp_path, monkeypatch):
    """Training feeds its own normalisation; validation, and so best.pt's choice, the
    val one, which the checkpoints carry as the one eval, predict and serve feed."""
    fed = []
    monkeypatch.setattr(
        engine, "eval_transform", lambda mode: fed.append(mode) or eval_transform(mode)
    )
    trained = spy(monkeypatch, engine.train_transform, "normalization")
    cfg = TINY.replace(iterations=1, eval_every=1, normalization="imagenet-greyworld",
                       val_normalization="imagenet-greyworld-clip")  # fmt: skip
    result = train(cfg, tmp_path, progress=False)
    assert (trained, fed) == (["imagenet-greyworld"], ["imagenet-greyworld-clip"])
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["normalization"] == "imagenet-greyworld-clip"
    assert best["train_config"]["normalization"] == "imagenet-greyworld"
    model, _ = model_from_checkpoint(best)
    val_set = config.build_val_set(cfg, eval_transform("imagenet-greyworld-clip"))
    again = evaluate(model.eval(), val_set, 5, torch.device("cpu"), progress=False)
    assert result["mean_iu"] == pytest.approx(again["mean_iu"])


@pytest.mark.parametrize(
    "weighting, chosen, other",
    [("median", median_frequency_weights, enet_weights),
     ("enet", enet_weights, median_frequency_weights)],
)  # fmt: skip
def test_the_class_weighting_reaches_the_loss(tmp_path, monkeypatch, weighting, chosen, other):
    """The loss gets the chosen weights of the training set, not another choice's."""
    seen = spy(monkeypatch, engine.heads_loss, "class_weights")
    cfg = TINY.replace(iterations=1, class_weighting=weighting, eval_every=1)
    train(cfg, tmp_path, progress=False)
    train_set = config.build_train_set(cfg)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], chosen(train_set))
    assert not torch.allclose(seen[0], other(train_set))


def test_collapsed_predictions_warn(tmp_path, monkeypatch, capsys):
    def predict_background(model):
        with torch.no_grad():
            model.score_fr.bias[0] = 1e4

    _hooked(monkeypatch, predict_background)
    cfg = TINY.replace(iterations=1, lr=1e-9, eval_every=1)
    result = train(cfg, tmp_path, progress=False)
    assert result["per_class_iu"][1:] == [0.0] * 4
    assert "predictions collapsed: 100% of pixels are class 0" in result["warning"]
    assert "warning: predictions collapsed" in capsys.readouterr().out
    assert records(tmp_path)[-1]["eval"]["warning"] == result["warning"]


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
    assert lr_factor(cfg.replace(poly_power=2.0), 50) == pytest.approx(0.25)
    assert lr_factor(cfg.replace(schedule="fixed"), 50) == 1.0


def test_every_optimizer_and_schedule_the_config_allows_is_built():
    """The config refuses other values; each allowed one has its builder."""
    assert tuple(engine.OPTIMIZERS) == config.OPTIMIZERS
    assert tuple(engine.SCHEDULES) == config.SCHEDULES
    model = torch.nn.Conv2d(3, 2, 1)
    sgd = engine.build_optimizer(model, TINY.replace(optimizer="sgd", momentum=0.7))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.7
    adamw = engine.build_optimizer(model, TINY.replace(optimizer="adamw", lr=0.03))
    assert type(adamw) is torch.optim.AdamW
    # Weights decay; the bias learns bias_lr_mult x faster and does not decay.
    weight, bias = adamw.param_groups
    assert weight["params"] == [model.weight] and bias["params"] == [model.bias]
    assert (weight["lr"], bias["lr"]) == (0.03, 0.03 * TINY.bias_lr_mult)
    assert (weight["weight_decay"], bias["weight_decay"]) == (TINY.weight_decay, 0.0)


def test_killed_training_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fcnseg", "train", "--out", str(out)]
    tiny = ["--width", "0.0625", "--crop", "48", "--batch-size", "2", "--quiet"]
    # Checkpoints are written at evaluations: evaluate at every step, kill in the middle.
    proc = subprocess.Popen([*cmd, *tiny, "--iterations", "400", "--eval-every", "1",
                             "--log-every", "1"])  # fmt: skip
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    done = load_checkpoint(out / "last.pt")["iteration"]
    assert done >= 1
    # The run's config.json gives every other flag.
    more = ["--iterations", str(done + 2), "--eval-every", "1000000", "--resume", "--quiet"]
    resumed = subprocess.run([*cmd, *more], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "last.pt")["iteration"] == done + 2
    assert logged(out, "loss") == list(range(1, done + 3))  # each once, wherever the kill fell


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
        preds = [model(image[None])[0].argmax(0) for image, _ in data]
    for pred, (_, label) in zip(preds, data, strict=True):
        expected.update(pred, label)
    for batch_size, channels_last in [(1, False), (2, False), (3, True)]:
        seen = {}  # on_image: each image once, with its own prediction and label
        metrics = evaluate(model, data, 3, torch.device("cpu"), batch_size=batch_size,
                           channels_last=channels_last, progress=False,
                           on_image=lambda i, *got, seen=seen: seen.setdefault(i, got))  # fmt: skip
        for key, value in expected.compute().items():
            assert metrics[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
        assert sorted(seen) == list(range(len(data)))
        for i, (pred, label) in seen.items():
            assert torch.equal(pred, preds[i]) and torch.equal(label, data[i][1])


def test_aux_weight_adds_each_coarser_stage_loss_times_the_weight():
    """The step's loss is the FCN-8s loss plus w times the FCN-32s and FCN-16s losses,
    each a mean over the non-void pixels, computed here by plain cross-entropy."""
    cfg = TINY.replace(aux_weight=0.4)
    model = engine.make_model(cfg, 5).eval()
    for name, p in model.named_parameters():
        if name.startswith("score"):  # zero at first: the stages would all be equal
            torch.nn.init.normal_(p, std=0.1)
    images = torch.randn(2, 3, 40, 52)
    labels = torch.randint(0, 5, (2, 40, 52))
    labels[:, :5] = 255  # void
    batch = (images, labels, torch.tensor([0, 1]))
    with torch.no_grad():
        got = engine._step_loss(model, batch, None, cfg, None, engine.Context())
        stages = model(images, stages=True)
    ce = [torch.nn.functional.cross_entropy(s, labels, ignore_index=255) for s in stages]
    assert not math.isclose(ce[0], ce[2], rel_tol=1e-3)
    torch.testing.assert_close(got, 0.4 * ce[0] + 0.4 * ce[1] + ce[2])
    plain = engine._step_loss(model, batch, None, TINY, None, engine.Context())
    torch.testing.assert_close(plain, ce[2])


def test_aux_weight_needs_a_net_with_skips(tmp_path):
    with pytest.raises(config.ConfigError, match=r"aux_weight \(--aux-weight\) 0.4 needs"):
        train(TINY.replace(model="fcn32s", aux_weight=0.4), tmp_path, progress=False)
    assert not (tmp_path / "config.json").exists()
