import pytest
import torch
from torch import nn

import fcnseg
from fcnseg.nets.geometry import CoordMap, coord_map, crop_offset

REFERENCE_CROPS = {
    "fcn32s": {"upscore": 19},
    "fcn16s": {"score_pool4": 5, "upscore16": 27},
    "fcn8s": {"score_pool4": 5, "score_pool3": 9, "upscore8": 31},
    "fcn8s-atonce": {"score_pool4": 5, "score_pool3": 9, "upscore8": 31},
    "fcn-alexnet": {"upscore": 18},
    "fcn-alexnet-caffe": {"upscore": 18},
    "fcn32s-color-d": {"upscore": 19},
    "fcn32s-color-hha": {"upscore": 19},
    "fcn32s-sem-geo": {"upscore_sem": 19, "upscore_geo": 19},
    "fcn16s-sem-geo": {"score_pool4_sem": 5, "upscore16_sem": 27,
                       "score_pool4_geo": 5, "upscore16_geo": 27},
    "fcn8s-sem-geo": {"score_pool4_sem": 5, "score_pool3_sem": 9, "upscore8_sem": 31,
                      "score_pool4_geo": 5, "score_pool3_geo": 9, "upscore8_geo": 31},
}  # fmt: skip


def test_registry():
    assert fcnseg.list_models() == list(REFERENCE_CROPS)
    with pytest.raises(ValueError, match="unknown model"):
        fcnseg.build_model("fcn4s", 21)


@pytest.mark.parametrize("name", fcnseg.list_models())
def test_reference_crop_offsets(name):
    model = fcnseg.build_model(name, 21)
    assert model.crops == REFERENCE_CROPS[name]
    text = model.describe_geometry()
    for layer, offset in REFERENCE_CROPS[name].items():
        assert f"{layer}: crop at offset {offset}" in text


@pytest.mark.parametrize("name", fcnseg.list_models())
@pytest.mark.parametrize("size", [(1, 1), (31, 17), (224, 224), (360, 480), (500, 375), (512, 512)])
def test_output_size_equals_input(name, size):
    # Geometry does not depend on width: a narrow net keeps this fast.
    model = fcnseg.build_model(name, 5, width=0.125).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, model.in_channels, *size))
    heads = out if isinstance(out, tuple) else (out,)  # SIFT Flow's: semantic, geometric
    assert [h.shape for h in heads] == [(1, n, *size) for n in (5, 3)[: len(heads)]]


def test_coord_map_of_layers():
    conv = nn.Conv2d(1, 1, 3, padding=100)
    pool = nn.MaxPool2d(2, 2)
    m = coord_map([conv, pool])
    # data pixel y is at (y + 99) / 2 - 1/4 in the pooled map
    assert m(0) == pytest.approx(99 / 2 - 0.25)
    deconv = nn.ConvTranspose2d(1, 1, 4, stride=2)
    assert coord_map([pool, deconv]) == CoordMap(1.0, 1.0)
    assert crop_offset(coord_map([pool, deconv]), CoordMap()) == 1
    with pytest.raises(ValueError, match="scale"):
        crop_offset(coord_map([pool]), CoordMap())
    with pytest.raises(TypeError, match="no coordinate map"):
        coord_map([nn.LSTM(1, 1)])
