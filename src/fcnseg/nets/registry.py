"""The model registry: the paper's FCNs by name (``build_model``, ``list_models``).

Besides the VGG16 nets of PASCAL VOC (also those of PASCAL-Context: the same nets
with 60 classes) and FCN-AlexNet, the reference's other nets (paper section 5):

- ``fcn-alexnet-caffe``: FCN-AlexNet on the reference's own CaffeNet (grouped
  convolutions, LRN), the layout its published weights have;
- ``fcn32s-color-d``: NYUDv2's early fusion, conv1_1 reads 4 channels (RGB + depth);
- ``fcn32s-color-hha``: NYUDv2's late fusion, a colour and an HHA stream whose
  scores are summed 0.5 / 0.5 (:class:`~fcnseg.nets.two_stream.TwoStreamFCN`);
- ``fcn32s-sem-geo``, ``fcn16s-sem-geo``, ``fcn8s-sem-geo``: SIFT Flow's two heads,
  ``num_classes`` semantic classes (33 there) and 3 geometric ones, both returned.

NYUDv2's ``color`` and ``hha`` nets are plain ``fcn32s`` with 40 classes: only
their input differs. The reference's layer names of each model are in
:mod:`fcnseg.nets.caffe_names`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from torch import nn

from fcnseg.errors import ConfigError
from fcnseg.nets.backbones import build_backbone
from fcnseg.nets.fcn import FCN, fcn_from_classifier
from fcnseg.nets.surgery import init_from, load_backbone_weights
from fcnseg.nets.two_stream import TwoStreamFCN
from fcnseg.nets.weights import IMAGENET_WEIGHTS


@dataclass(frozen=True)
class ModelSpec:
    """What distinguishes one registered FCN from another (paper section 4)."""

    backbone: str
    skips: tuple[str, ...] = ()
    skip_scales: dict[str, float] = field(default_factory=dict)
    final_kernel: int = 64
    description: str = ""
    in_channels: int = 3  # of the backbone's first convolution (4: RGB-D)
    # (name suffix, classes) per head; None: build_model's num_classes.
    heads: tuple[tuple[str, int | None], ...] = (("", None),)
    # Late fusion: one backbone per stream, in input-channel order, scores summed.
    streams: tuple[str, ...] = ()
    stream_weights: tuple[float, ...] = ()


SIFT_FLOW_HEADS = (("_sem", None), ("_geo", 3))
"""SIFT Flow's heads: semantic (``num_classes``: 33 there) and geometric (sky,
horizontal, vertical), named as the reference's layers are."""


MODELS: dict[str, ModelSpec] = {
    "fcn32s": ModelSpec("vgg16", description="VGG16, scores at stride 32 upsampled 32x"),
    "fcn16s": ModelSpec(
        "vgg16", ("pool4",), final_kernel=32, description="FCN-32s + pool4 skip, stride 16"
    ),
    "fcn8s": ModelSpec(
        "vgg16",
        ("pool4", "pool3"),
        final_kernel=16,
        description="FCN-16s + pool3 skip, stride 8",
    ),
    "fcn8s-atonce": ModelSpec(
        "vgg16",
        ("pool4", "pool3"),
        {"pool4": 0.01, "pool3": 0.0001},
        final_kernel=16,
        description="FCN-8s trained in one stage, skips scaled by 0.01 / 0.0001",
    ),
    "fcn-alexnet": ModelSpec(
        "alexnet", final_kernel=63, description="AlexNet, stride 32, upsampled with kernel 63"
    ),
    "fcn-alexnet-caffe": ModelSpec(
        "caffenet",
        final_kernel=63,
        description="FCN-AlexNet on the reference's CaffeNet (groups, LRN): its weights' layout",
    ),
    "fcn32s-color-d": ModelSpec(
        "vgg16", in_channels=4, description="FCN-32s on RGB-D: conv1_1 reads 4 channels (NYUDv2)"
    ),
    "fcn32s-color-hha": ModelSpec(
        "vgg16",
        streams=("color", "hha"),
        stream_weights=(0.5, 0.5),
        description="colour and HHA FCN-32s streams, scores summed 0.5/0.5 (NYUDv2)",
    ),
    "fcn32s-sem-geo": ModelSpec(
        "vgg16",
        heads=SIFT_FLOW_HEADS,
        description="FCN-32s, semantic + geometric heads (SIFT Flow)",
    ),
    "fcn16s-sem-geo": ModelSpec(
        "vgg16",
        ("pool4",),
        final_kernel=32,
        heads=SIFT_FLOW_HEADS,
        description="FCN-16s, semantic + geometric heads (SIFT Flow)",
    ),
    "fcn8s-sem-geo": ModelSpec(
        "vgg16",
        ("pool4", "pool3"),
        final_kernel=16,
        heads=SIFT_FLOW_HEADS,
        description="FCN-8s, semantic + geometric heads (SIFT Flow)",
    ),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved in checkpoints."""

    name: str
    num_classes: int
    learnable_upsampling: bool = False
    batch_norm: bool = False
    width: float = 1.0
    pad: int = 100
    dropout: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(MODELS)


def build_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: str | os.PathLike | None = None,
    backbone_weights: str | os.PathLike | None = None,
    learnable_upsampling: bool = False,
    batch_norm: bool = False,
    width: float = 1.0,
    pad: int = 100,
    dropout: float = 0.5,
    init_from_model: nn.Module | None = None,
) -> FCN | TwoStreamFCN:
    """Build a registered FCN.

    Args:
        name: one of :func:`list_models` (``fcn32s``, ``fcn16s``, ``fcn8s``,
            ``fcn8s-atonce``, ``fcn-alexnet``, and the nets of section 5: see the
            module's docstring).
        num_classes: output classes (void excluded); None: the ``weights``' count.
            For the two-head nets, the semantic head's (the geometric head has 3).
        weights: trained weights of the whole net: a reference name
            (:data:`~fcnseg.nets.reference_weights.REFERENCE_WEIGHTS`, downloaded once
            through torch.hub's cache), a ``.caffemodel`` or a file of fcnseg's.
        backbone_weights: ``None`` (random), ``"imagenet"`` (torchvision's file,
            downloaded once, hash checked) or a path to a torchvision-format state_dict.
        learnable_upsampling: learn the upsampling (default fixed bilinear, as the reference).
        batch_norm: VGG16 with batch norm (torchvision's ``vgg16_bn`` layout).
        width: channel multiplier of the backbone; 1.0 is the published net.
        pad: input padding of the first convolution; the reference's 100 makes
            every input size align.
        dropout: dropout rate after fc6 and fc7 (the reference's 0.5).
        init_from_model: a trained coarser FCN to start from (staged training).

    Returns:
        An :class:`~fcnseg.nets.fcn.FCN`: (N, C_in, H, W) -> (N, num_classes, H, W),
        a tuple of such logits for the two-head nets; the late-fusion net is a
        :class:`~fcnseg.nets.two_stream.TwoStreamFCN`. ``model.in_channels`` is
        C_in (3; 4 for RGB-D, 6 for colour + HHA); ``model.config`` (a
        :class:`ModelConfig`) rebuilds it.

    Example:
        >>> import torch, fcnseg
        >>> model = fcnseg.build_model("fcn8s", 21).eval()
        >>> model(torch.randn(1, 3, 31, 17)).shape
        torch.Size([1, 21, 31, 17])
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    # Imported here: the reference weights' names are derived from this registry.
    from fcnseg.nets.reference_weights import load_weights, read_weights

    trained = None if weights is None else read_weights(weights, name)
    if trained is not None and num_classes not in (None, trained.num_classes):
        raise ConfigError(
            f"num_classes={num_classes}, but {trained.source} predicts {trained.num_classes}"
        )
    num_classes = trained.num_classes if trained is not None else num_classes
    if num_classes is None or num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1 (or given by weights), got {num_classes}")
    spec = MODELS[name]
    if str(backbone_weights) == "imagenet" and spec.backbone not in IMAGENET_WEIGHTS:
        raise ConfigError(
            f"{name}: torchvision publishes no ImageNet weights for its {spec.backbone} "
            "backbone; start from a converted reference caffemodel instead"
        )
    options = dict(backbone_weights=backbone_weights, learnable_upsampling=learnable_upsampling,
                   batch_norm=batch_norm, width=width, pad=pad, dropout=dropout)  # fmt: skip
    if spec.streams:
        if learnable_upsampling:
            raise ConfigError(f"{name}: its upsampling is fixed (one for the fused scores)")
        streams = {s: _single_fcn(spec, num_classes, **options) for s in spec.streams}
        model = TwoStreamFCN(streams, spec.stream_weights)
    else:
        model = _single_fcn(spec, num_classes, **options)
    model.config = ModelConfig(
        name, num_classes, learnable_upsampling, batch_norm, width, pad, dropout
    )
    if init_from_model is not None:
        init_from(model, init_from_model)
    if trained is not None:
        load_weights(model, trained, name)
    return model


def _single_fcn(
    spec: ModelSpec, num_classes: int, *, backbone_weights, learnable_upsampling: bool,
    batch_norm: bool, width: float, pad: int, dropout: float,
) -> FCN:  # fmt: skip
    """The FCN ``spec`` describes (one stream of a late-fusion net)."""
    classifier = build_backbone(
        spec.backbone, batch_norm=batch_norm, width=width, in_channels=spec.in_channels
    )
    if backbone_weights is not None:
        load_backbone_weights(
            classifier, backbone_weights, name=spec.backbone, batch_norm=batch_norm
        )
    return fcn_from_classifier(
        classifier,
        num_classes=tuple(num_classes if n is None else n for _, n in spec.heads),
        heads=tuple(suffix for suffix, _ in spec.heads),
        skips=spec.skips,
        skip_scales=spec.skip_scales,
        final_kernel=spec.final_kernel,
        learnable_upsampling=learnable_upsampling,
        pad=pad,
        dropout=dropout,
    )


def build_from_config(config: ModelConfig | dict) -> FCN | TwoStreamFCN:
    """Rebuild a model (random weights) from its saved :class:`ModelConfig`."""
    if isinstance(config, dict):
        config = ModelConfig(**config)
    return build_model(
        config.name,
        config.num_classes,
        learnable_upsampling=config.learnable_upsampling,
        batch_norm=config.batch_norm,
        width=config.width,
        pad=config.pad,
        dropout=config.dropout,
    )
