import pytest
import torch
from torch import nn

from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.train.checkpoint import load_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.ema import ema_decay, update_ema
from fcnseg.train.engine import make_model, train

RUN = TrainConfig(
    model="fcn8s", width=0.0625, batch_norm=True, dataset="synthetic", crop=48, batch_size=2,
    iterations=4, optimizer="sgd", lr=0.01, momentum=0.9, eval_every=1000, ema=0.25,
)  # fmt: skip


def test_update_is_the_weighted_mean_and_counts_are_copied():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    average = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    model[1].train()(torch.randn(4, 3, 5, 5))  # running stats and the count move
    before = {k: v.clone() for k, v in average.state_dict().items()}
    update_ema(average, model, 0.75)
    after, trained = average.state_dict(), model.state_dict()
    for name, value in after.items():
        if name.endswith("num_batches_tracked"):
            assert value.item() == trained[name].item() == 1
        else:
            torch.testing.assert_close(value, 0.75 * before[name] + 0.25 * trained[name])


def test_decay_is_capped_early_then_constant():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 8) == pytest.approx(9 / 18)
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.25, 5) == 0.25


def test_the_run_saves_the_average_of_its_trained_weights(tmp_path, monkeypatch):
    monkeypatch.setitem(SyntheticDataset.SIZES, "val", 4)
    train(RUN, tmp_path / "ema", progress=False)
    saved = load_checkpoint(tmp_path / "ema" / "last.pt")
    # The same run without the average, stopped after every update, and its start:
    # the weights to average, by the formula.
    plain, run = RUN.replace(ema=0.0), tmp_path / "plain"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plain.seed)
        average = make_model(plain, SyntheticDataset.info.num_classes).state_dict()
    for k in range(1, RUN.iterations + 1):
        train(plain, run, progress=False, stop_after=k, resume=k > 1)
        trained = load_checkpoint(run / "last.pt")["model"]
        d = min(RUN.ema, (1 + k) / (10 + k))
        average = {
            n: d * a + (1 - d) * trained[n] if a.is_floating_point() else trained[n]
            for n, a in average.items()
        }
    # Averaging leaves training alone; "model" (what eval, predict and init_from read)
    # is the average.
    for name, value in trained.items():
        assert torch.equal(saved["train_model"][name], value), name
        torch.testing.assert_close(saved["model"][name], average[name], msg=name)
    assert not torch.allclose(saved["model"]["fc6.weight"], trained["fc6.weight"])


def test_resume_restores_the_average_and_the_trained_weights(tmp_path, monkeypatch):
    monkeypatch.setitem(SyntheticDataset.SIZES, "val", 4)
    train(RUN, tmp_path / "full", progress=False)
    train(RUN, tmp_path / "split", progress=False, stop_after=2)
    train(RUN, tmp_path / "split", progress=False, resume=True)
    full, split = (load_checkpoint(tmp_path / r / "last.pt") for r in ("full", "split"))
    for key in ("model", "train_model"):
        for name, value in full[key].items():
            assert torch.equal(split[key][name], value), (key, name)
