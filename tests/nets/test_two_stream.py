"""The late-fusion net (NYUDv2 colour + HHA): streams, fusion, input channels."""

import pytest
import torch

import fcnseg
from fcnseg.nets.two_stream import TwoStreamFCN
from tests.conftest import randomize_scores


def small(name, classes=4):
    return randomize_scores(fcnseg.build_model(name, classes, width=0.0625)).double().eval()


def test_equal_streams_on_equal_inputs_are_one_fcn32s():
    # 0.5 a + 0.5 a = a: the fused net on (x, x) with both streams an FCN-32s's weights
    # is that FCN-32s on x.
    single = small("fcn32s")
    fused = fcnseg.build_model("fcn32s-color-hha", 4, width=0.0625).double().eval()
    state = single.state_dict()
    fused.load_state_dict({f"{s}.{k}": v for s in ("color", "hha") for k, v in state.items()})
    x = torch.randn(2, 3, 37, 29, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(fused(torch.cat([x, x], 1)), single(x), rtol=1e-10, atol=0)


def test_each_stream_reads_its_own_channels():
    model = small("fcn32s-color-hha")
    torch.nn.init.zeros_(model.hha.score_fr.weight)
    torch.nn.init.zeros_(model.hha.score_fr.bias)
    x = torch.randn(1, 6, 40, 40, dtype=torch.float64)
    y = x.clone()
    y[:, 3:] = torch.randn(1, 3, 40, 40, dtype=torch.float64)  # another HHA image
    with torch.inference_mode():
        out = model(x)
        torch.testing.assert_close(model(y), out, rtol=0, atol=0)  # the HHA stream scores 0
        expected = 0.5 * model.color.upsample(0, model.color.score(x[:, :3]), (40, 40))
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_input_channels_checked():
    model = small("fcn32s-color-hha")
    assert model.in_channels == 6
    with pytest.raises(ValueError, match="expected 6 input channels, got 3"):
        model(torch.randn(1, 3, 20, 20, dtype=torch.float64))


def test_geometry_and_fixed_upsampling():
    model = small("fcn32s-color-hha")
    assert model.crops == {"upscore": 19}
    assert model.describe_geometry().startswith(
        "score_fused = 0.5 color.score_fr + 0.5 hha.score_fr"
    )
    with pytest.raises(fcnseg.UserError, match="upsampling is fixed"):
        fcnseg.build_model("fcn32s-color-hha", 4, learnable_upsampling=True, width=0.0625)


def test_streams_must_align():
    a, b = small("fcn32s"), small("fcn8s")
    with pytest.raises(ValueError, match="stream 'b'"):
        TwoStreamFCN({"a": a, "b": b}, (0.5, 0.5))
    with pytest.raises(ValueError, match="2 streams need as many weights"):
        TwoStreamFCN({"a": a, "b": small("fcn32s")}, (1.0,))


def test_rebuilt_from_its_config():
    model = fcnseg.build_model("fcn32s-color-hha", 40, width=0.0625)
    again = fcnseg.build_from_config(model.config.to_dict())
    assert isinstance(again, TwoStreamFCN)
    assert again.state_dict().keys() == model.state_dict().keys()
