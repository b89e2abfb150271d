"""The reference's layer names for every registered model: Caffe name -> fcnseg module path.

The reference names each layer in its ``net.py``; fcnseg's modules keep those
names except in the backbone, which keeps torchvision's (``features.0`` is
``conv1_1``), and in the late-fusion net, whose streams are submodules. So:

====================  ==============================  ================================
model                 reference (``net.py``)          fcnseg module
====================  ==============================  ================================
VGG16 nets            ``conv1_1`` ... ``conv5_3``     ``features.0`` ... ``features.28``
                      ``fc6``, ``fc7``                ``fc6``, ``fc7``
                      ``score_fr``, ``upscore2``,     the same names
                      ``score_pool4``, ...
``fcn32s-color-d``    ``conv1_1_bgrd``                ``features.0`` (4 input channels)
``fcn32s-sem-geo``    ``score_fr_sem``,               the same names (one head per
(16s, 8s alike)       ``upscore_sem``, ``_geo`` ...   suffix)
``fcn32s-color-hha``  ``conv1_1color``,               ``color.features.0``,
                      ``score_frhha`` (no ``_``)      ``hha.score_fr``
                      ``upscore`` (of the sum)        ``color.upscore``
``fcn-alexnet-caffe`` ``conv1`` ... ``conv5``         ``features.0, 4, 8, 10, 12``
``fcn-alexnet``       ``conv1`` ... ``conv5``         ``features.0, 3, 6, 8, 10``
====================  ==============================  ================================

:data:`REFERENCE_NAMES` spells every entry out. The upsampling layers are listed too:
the reference stores their (fixed, bilinear) weights; fcnseg's fixed upsamplers
have none, learnable ones a ``weight``. ``fcn-alexnet`` is torchvision's AlexNet,
narrower than the reference's CaffeNet: its names map, its shapes do not.
"""

from __future__ import annotations

from fcnseg.nets.backbones import VGG16_LAYOUT
from fcnseg.nets.registry import MODELS, ModelSpec


def _vgg16_convs() -> dict[str, str]:
    """``conv{block}_{i}`` -> ``features.{index}`` in VGG16's layout without batch norm
    (each convolution is followed by its ReLU; each block ends in a pooling layer)."""
    names, index, block, i = {}, 0, 1, 1
    for v in VGG16_LAYOUT:
        if v == "M":
            index, block, i = index + 1, block + 1, 1
            continue
        names[f"conv{block}_{i}"] = f"features.{index}"
        index, i = index + 2, i + 1
    return names


BACKBONE_NAMES: dict[str, dict[str, str]] = {
    "vgg16": _vgg16_convs(),
    # torchvision: conv, relu, pool, conv, relu, pool, then conv, relu x 3.
    "alexnet": {
        f"conv{k}": f"features.{i}" for k, i in zip(range(1, 6), (0, 3, 6, 8, 10), strict=True)
    },
    # CaffeNet: conv1, relu, pool1, norm1, conv2, relu, pool2, norm2, then conv, relu x 3.
    "caffenet": {
        f"conv{k}": f"features.{i}" for k, i in zip(range(1, 6), (0, 4, 8, 10, 12), strict=True)
    },
}
"""Caffe name -> module path of each backbone's convolutions."""


def _head_names(spec: ModelSpec, suffix: str) -> list[str]:
    """The layers of one head, as the reference names them (= fcnseg's module names)."""
    names = [f"score_fr{suffix}"]
    for k, tap in enumerate(spec.skips):
        names.append(("upscore2" if k == 0 else f"upscore_{spec.skips[k - 1]}") + suffix)
        names.append(f"score_{tap}{suffix}")
    final = {0: "upscore", 1: "upscore16", 2: "upscore8"}[len(spec.skips)]
    return [*names, final + suffix]


def _names(spec: ModelSpec) -> dict[str, str]:
    """Reference name -> fcnseg module path for one registered model."""
    # The reference's colour + depth net renames its 4-channel conv1_1.
    rename = {"conv1_1": "conv1_1_bgrd"} if spec.in_channels == 4 else {}
    convs = BACKBONE_NAMES[spec.backbone]
    single = {rename.get(caffe, caffe): path for caffe, path in convs.items()}
    single |= {"fc6": "fc6", "fc7": "fc7"}
    for suffix, _ in spec.heads:
        single |= {name: name for name in _head_names(spec, suffix)}
    if not spec.streams:
        return single
    # Late fusion: every layer of a stream carries the stream's name, unseparated
    # (``conv1_1color``), but for the one upsampling of the fused scores.
    final = _head_names(spec, "")[-1]
    names = {
        caffe + stream: f"{stream}.{path}"
        for stream in spec.streams
        for caffe, path in single.items()
        if caffe != final
    }
    return names | {final: f"{spec.streams[0]}.{single[final]}"}


REFERENCE_NAMES: dict[str, dict[str, str]] = {name: _names(spec) for name, spec in MODELS.items()}
"""Model name -> {reference layer name: fcnseg module path}, for every registered model.

Example:
    >>> REFERENCE_NAMES["fcn32s-color-hha"]["score_frhha"]
    'hha.score_fr'
"""
