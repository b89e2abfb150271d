"""The reference's layer names of every registered model, against the built models."""

import pytest
import torch

import fcnseg
from fcnseg.nets.caffe_names import REFERENCE_NAMES
from fcnseg.nets.upsample import Upsample


def meta_model(name, classes=21, **kw):
    with torch.device("meta"):  # full width, no memory
        return fcnseg.build_model(name, classes, **kw)


def weighted_or_upsampling(model):
    """Module paths of the layers the reference stores blobs for."""
    return {
        path
        for path, m in model.named_modules()
        if isinstance(m, Upsample) or any(True for _ in m.parameters(recurse=False))
    }


@pytest.mark.parametrize("name", fcnseg.list_models())
def test_names_cover_the_model(name):
    model = meta_model(name)
    used = set(REFERENCE_NAMES[name].values())
    assert len(used) == len(REFERENCE_NAMES[name])  # one module per reference layer
    own = weighted_or_upsampling(model)
    if name == "fcn32s-color-hha":
        own.discard("hha.upscore")  # the fused scores take colour's upsampler
    assert used == own


# Spelled out from the reference's net.py files.
VGG = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1",
       "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7"]  # fmt: skip
HEAD8 = ["score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3", "upscore8"]


@pytest.mark.parametrize(
    "name,layers",
    [
        ("fcn8s", VGG + HEAD8),
        ("fcn16s", VGG + ["score_fr", "upscore2", "score_pool4", "upscore16"]),
        ("fcn32s-color-d", ["conv1_1_bgrd"] + VGG[1:] + ["score_fr", "upscore"]),
        ("fcn8s-sem-geo", VGG + [f"{n}_{h}" for h in ("sem", "geo") for n in HEAD8]),
        ("fcn32s-sem-geo", VGG + ["score_fr_sem", "upscore_sem", "score_fr_geo", "upscore_geo"]),
        (
            "fcn32s-color-hha",
            [f"{n}{s}" for s in ("color", "hha") for n in VGG + ["score_fr"]] + ["upscore"],
        ),
        ("fcn-alexnet-caffe", ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                               "score_fr", "upscore"]),
    ],
)  # fmt: skip
def test_reference_layer_names(name, layers):
    assert sorted(REFERENCE_NAMES[name]) == sorted(layers)


# bvlc_reference_caffenet's blob shapes (FCN-AlexNet keeps them, fc6/fc7 as convolutions).
CAFFENET_SHAPES = {
    "conv1": (96, 3, 11, 11),
    "conv2": (256, 48, 5, 5),
    "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3),
    "conv5": (256, 192, 3, 3),
    "fc6": (4096, 256, 6, 6),
    "fc7": (4096, 4096, 1, 1),
    "score_fr": (21, 4096, 1, 1),
}


def test_caffenet_blob_shapes():
    modules = dict(meta_model("fcn-alexnet-caffe").named_modules())
    names = REFERENCE_NAMES["fcn-alexnet-caffe"]
    assert {k: tuple(modules[names[k]].weight.shape) for k in CAFFENET_SHAPES} == CAFFENET_SHAPES


def test_stream_and_depth_shapes():
    hha = dict(meta_model("fcn32s-color-hha", 40).named_modules())
    names = REFERENCE_NAMES["fcn32s-color-hha"]
    assert tuple(hha[names["score_frhha"]].weight.shape) == (40, 4096, 1, 1)
    depth = dict(meta_model("fcn32s-color-d", 40).named_modules())
    assert tuple(depth[REFERENCE_NAMES["fcn32s-color-d"]["conv1_1_bgrd"]].weight.shape) == (
        64, 4, 3, 3,
    )  # fmt: skip
    geo = dict(meta_model("fcn8s-sem-geo", 33).named_modules())
    assert tuple(geo["score_pool3_geo"].weight.shape) == (3, 256, 1, 1)
    assert tuple(geo["score_pool3_sem"].weight.shape) == (33, 256, 1, 1)
