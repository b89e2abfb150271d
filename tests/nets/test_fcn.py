"""The FCN's stages: a skip net's coarser predictions are its own FCN-32s and FCN-16s."""

import pytest
import torch
from torch import nn

import fcnseg
from fcnseg.nets.fcn import head_modules


def _with_random_scores(model: nn.Module) -> nn.Module:
    """The score layers start at zero; random ones make every stage differ."""
    for name, p in model.named_parameters():
        if name.startswith("score"):
            nn.init.normal_(p, std=0.1)
    return model.eval()


def _same_weights(name: str, source: nn.Module, pad: int) -> nn.Module:
    """Net ``name`` with ``source``'s weights for every layer it has (it has no others)."""
    net = fcnseg.build_model(name, 5, width=0.125, pad=pad).eval()
    missing, _ = net.load_state_dict(source.state_dict(), strict=False)
    assert missing == []
    return net


@pytest.mark.parametrize("pad", [100, 1])
@pytest.mark.parametrize("size", [(1, 1), (45, 61), (64, 64)])
def test_stages_of_fcn8s_are_fcn32s_fcn16s_fcn8s_with_its_weights(pad, size):
    fcn8s = _with_random_scores(fcnseg.build_model("fcn8s", 5, width=0.125, pad=pad))
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        stages = fcn8s(x, stages=True)
        expected = [_same_weights(n, fcn8s, pad)(x) for n in ("fcn32s", "fcn16s")] + [fcn8s(x)]
    assert len(stages) == 3
    assert not torch.allclose(stages[0], stages[1])
    for got, want in zip(stages, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s-sem-geo"])
def test_stages_need_one_head_and_skips(name):
    model = fcnseg.build_model(name, 5, width=0.125).eval()
    with pytest.raises(ValueError, match="stage logits need one head and skips"):
        model(torch.randn(1, 3, 32, 32), stages=True)


@pytest.mark.parametrize("name", ["fcn8s", "fcn8s-sem-geo"])
def test_head_modules_give_each_heads_logits(name):
    model = _with_random_scores(fcnseg.build_model(name, 5, width=0.125))
    x = torch.randn(2, 3, 40, 44)
    with torch.inference_mode():
        out = model(x)
        expected = out if isinstance(out, tuple) else (out,)
        modules = head_modules(model)
        assert len(modules) == len(expected) == (2 if name.endswith("sem-geo") else 1)
        for module, logits in zip(modules, expected, strict=True):
            torch.testing.assert_close(module(x), logits, rtol=0, atol=0)
