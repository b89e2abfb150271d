"""The fully convolutional network and its skip architecture (paper sections 3-4).

A classifier, decapitated and convolutionalized (section 4.1), scores the image
at stride 32 (``score_fr``). Upsampling those coarse scores straight to the
input is FCN-32s. The skip architecture (section 4.2) upsamples them 2x
(``upscore2``), adds scores predicted from a finer pooling layer
(``score_pool4``, cropped to align) and repeats (``fuse_pool4`` -> FCN-16s,
``fuse_pool3`` -> FCN-8s) before the final upsampling, which is cropped to the
input. Every crop offset comes from the layers' coordinate maps.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from fcnseg.errors import ConfigError
from fcnseg.nets.backbones import Classifier
from fcnseg.nets.convolutionalize import feature_channels, linear_to_conv
from fcnseg.nets.geometry import CoordMap, coord_map, crop_offset, layer_map
from fcnseg.nets.upsample import Upsample, bilinear_upsample_crop

REFERENCE_PAD = 100


class FCN(nn.Module):
    """An FCN over a convolutionalized backbone, with optional skips and one or more heads.

    Args:
        features: the backbone's ``features`` (N, C_in, H, W) -> (N, C5, H/32, W/32),
            already adapted (input padding, ceil-mode pooling).
        fc6, fc7: the backbone's fully connected layers as convolutions.
        taps: name -> index into ``features`` of each map a skip may read.
        num_classes: number of output classes, one count per head.
        heads: the heads' name suffixes. One head (``("",)``, the default) names its
            layers ``score_fr``, ``upscore2``, ...; SIFT Flow's two heads
            (``("_sem", "_geo")``) name them ``score_fr_sem``, ``score_fr_geo``, ...
            as the reference does. Every head reads the same fc7 and taps.
        skips: tap names to fuse, coarse to fine, e.g. ``("pool4", "pool3")``.
        skip_scales: fixed factor applied to a tap before scoring it (the
            at-once FCN-8s uses 0.01 for pool4 and 0.0001 for pool3).
        final_kernel: kernel of the last upsampling (2 x its stride in VGG nets).
        learnable_upsampling: learn the upsampling filters instead of fixing them.
        dropout: dropout rate after fc6 and fc7 (0.5 in the reference).

    Shapes: (N, C_in, H, W) -> logits (N, num_classes, H, W), for any H, W >= 1 when
    the input padding is large enough (100 for the reference nets); with several
    heads, a tuple of logits, one (N, num_classes[k], H, W) per head.
    """

    def __init__(
        self,
        features: nn.Sequential,
        fc6: nn.Conv2d,
        fc7: nn.Conv2d,
        *,
        taps: Mapping[str, int],
        num_classes: int | Sequence[int],
        heads: Sequence[str] = ("",),
        skips: Sequence[str] = (),
        skip_scales: Mapping[str, float] | None = None,
        final_kernel: int = 64,
        learnable_upsampling: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        classes = (num_classes,) if isinstance(num_classes, int) else tuple(num_classes)
        if len(classes) != len(heads):
            raise ValueError(f"{len(heads)} heads {tuple(heads)} need as many class counts")
        self.features = features
        self.fc6, self.relu6, self.drop6 = fc6, nn.ReLU(inplace=True), SampleDropout(dropout, 6)
        self.fc7, self.relu7, self.drop7 = fc7, nn.ReLU(inplace=True), SampleDropout(dropout, 7)
        self.heads = tuple(heads)
        self.skips = tuple(skips)
        self.skip_scales = dict(skip_scales or {})
        self._tap_index = {taps[name]: name for name in self.skips}
        self.upsamplers: list[str] = []  # every head's 2x upsamplers, in order
        self.final_names: list[str] = []  # every head's final upsampler
        self.crops: dict[str, int] = {}
        self.stage_crops: list[list[tuple[int, int]]] = []  # per head: (stride, crop)
        for suffix, n in zip(self.heads, classes, strict=True):
            self._add_head(suffix, n, taps, final_kernel, learnable_upsampling)

    def _add_head(
        self, suffix: str, num_classes: int, taps: Mapping[str, int], final_kernel: int,
        learnable: bool,
    ) -> None:  # fmt: skip
        """Register one head's layers (names ending in ``suffix``) and their crops."""
        # Score layers start at zero (section 4.2): a new skip leaves the output unchanged.
        self.add_module(f"score_fr{suffix}", _zero_conv(self.fc7.out_channels, num_classes))
        # The coordinate map of the current scores, refined skip by skip.
        score_map = coord_map([*self.features, self.fc6, self.fc7])
        stages = []
        for k, name in enumerate(self.skips):
            stages.append(_stage_crop(score_map, num_classes))
            up_name = ("upscore2" if k == 0 else f"upscore_{self.skips[k - 1]}") + suffix
            up = Upsample(num_classes, 4, 2, learnable=learnable)
            self.add_module(up_name, up)
            self.upsamplers.append(up_name)
            score_map = score_map.then(layer_map(up))
            tap = self.features[: taps[name] + 1]
            skip_name = f"score_{name}{suffix}"
            self.add_module(skip_name, _zero_conv(feature_channels(tap), num_classes))
            # The reference crops the (larger) skip; with little input padding the
            # upsampled scores are the larger map and are cropped instead.
            tap_map = coord_map(tap)
            if tap_map.offset >= score_map.offset:
                self.crops[skip_name] = crop_offset(tap_map, score_map)
            else:
                self.crops[up_name] = crop_offset(score_map, tap_map)
                score_map = tap_map
        stride = round(1 / score_map.scale)
        final_name = (f"upscore{stride}" if self.skips else "upscore") + suffix
        final = Upsample(num_classes, final_kernel, stride, learnable=learnable)
        self.add_module(final_name, final)
        self.final_names.append(final_name)
        self.stage_crops.append(stages)
        self.crops[final_name] = crop_offset(score_map.then(layer_map(final)), CoordMap())

    @property
    def final_name(self) -> str:
        """The (first) head's final upsampler: ``upscore``, ``upscore16`` or ``upscore8``."""
        return self.final_names[0]

    @property
    def has_stages(self) -> bool:
        """Whether ``forward(stages=True)`` applies: one head, and skips to give it stages."""
        return len(self.heads) == 1 and bool(self.skips)

    @property
    def in_channels(self) -> int:
        """Channels of the input: 3 (an image), 4 for RGB-D."""
        return self.features[0].in_channels

    def trunk(
        self, x: torch.Tensor, seeds: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """fc7's output (N, 4096, H', W') and the skips' taps by name; ``seeds``: see
        :meth:`forward`."""
        taps: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._tap_index:
                taps[self._tap_index[i]] = x
        x = self.drop6(self.relu6(self.fc6(x)), seeds)  # (N, 4096, H/32 - 6, ...) for VGG
        return self.drop7(self.relu7(self.fc7(x)), seeds), taps

    def head_score(
        self, k: int, fc7: torch.Tensor, taps: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Head ``k``'s scores at the net's finest stride, from :meth:`trunk`'s outputs."""
        return self.head_stages(k, fc7, taps)[-1]

    def head_stages(
        self, k: int, fc7: torch.Tensor, taps: Mapping[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """Head ``k``'s scores after each stage of the skip architecture, coarse to fine:
        ``score_fr`` (stride 32), then each fusion (``fuse_pool4`` at 16, ...)."""
        suffix = self.heads[k]
        scores = [getattr(self, f"score_fr{suffix}")(fc7)]
        ups = self.upsamplers[k * len(self.skips) : (k + 1) * len(self.skips)]
        for name, up_name in zip(self.skips, ups, strict=True):
            score = getattr(self, up_name)(scores[-1])  # 2x finer
            tap = taps[name] * self.skip_scales.get(name, 1.0)
            skip_name = f"score_{name}{suffix}"
            skip = getattr(self, skip_name)(tap)
            scores.append(
                _fuse(score, self.crops.get(up_name, 0), skip, self.crops.get(skip_name, 0))
            )
        return scores

    def score(self, x: torch.Tensor, seeds: torch.Tensor | None = None):
        """Class scores at the net's finest stride, before the final upsampling.

        Shapes: (N, C_in, H, W) -> (N, num_classes, H', W') with H' about H / stride
        plus the margin the input padding adds (a tuple of them with several heads).
        ``seeds`` (N,): see :meth:`forward`.
        """
        fc7, taps = self.trunk(x, seeds)
        scores = tuple(self.head_score(k, fc7, taps) for k in range(len(self.heads)))
        return scores if len(scores) > 1 else scores[0]

    def upsample(self, k: int, score: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Head ``k``'s final upsampling of ``score``, cropped to the input ``size``."""
        final: Upsample = getattr(self, self.final_names[k])
        return final.upsample_crop(score, self.crops[self.final_names[k]], tuple(size))

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None, *, stages: bool = False):
        """Logits (N, num_classes, H, W) of inputs (N, C_in, H, W); with several heads,
        a tuple of them, one per head in :attr:`heads` order.

        ``seeds`` (N,) int64, in training only: sample i's dropout masks are drawn
        from ``seeds[i]`` alone, so they do not depend on which batch or process
        the sample is in (see :class:`SampleDropout`). Without seeds, ordinary dropout.

        ``stages``: a one-head net's logits after every stage instead, coarse to fine
        (FCN-32s, FCN-16s, FCN-8s for FCN-8s), a tuple of (N, num_classes, H, W); the
        coarser stages are upsampled by fixed bilinear kernels and cropped as their
        own FCN would be (the paper's FCN-32s crop, 19, for ``score_fr`` at pad 100).
        Training puts a loss on each (deep supervision: ``TrainConfig.aux_weight``).
        """
        fc7, taps = self.trunk(x, seeds)
        size = x.shape[-2:]
        if stages:
            return self._stage_logits(fc7, taps, size)
        logits = tuple(
            self.upsample(k, self.head_score(k, fc7, taps), size) for k in range(len(self.heads))
        )
        return logits if len(logits) > 1 else logits[0]

    def _stage_logits(
        self, fc7: torch.Tensor, taps: Mapping[str, torch.Tensor], size: Sequence[int]
    ) -> tuple[torch.Tensor, ...]:
        if not self.has_stages:
            raise ValueError(
                f"stage logits need one head and skips; this net has {len(self.heads)} "
                f"head(s) and skips {self.skips}"
            )
        *coarse, final = self.head_stages(0, fc7, taps)
        upsampled = [
            bilinear_upsample_crop(score, 2 * stride, stride, crop, tuple(size))
            for score, (stride, crop) in zip(coarse, self.stage_crops[0], strict=True)
        ]
        return (*upsampled, self.upsample(0, final, size))

    def describe_geometry(self) -> str:
        """One line per crop: which map is cropped, at what offset, and why."""
        lines = []
        for k, suffix in enumerate(self.heads):
            ups = self.upsamplers[k * len(self.skips) : (k + 1) * len(self.skips)]
            for name, up_name in zip(self.skips, ups, strict=True):
                skip_name = f"score_{name}{suffix}"
                cropped = up_name if up_name in self.crops else skip_name
                other = skip_name if up_name in self.crops else f"{up_name} (2x coarser scores)"
                lines.append(
                    f"{cropped}: crop at offset {self.crops[cropped]} to align with {other} "
                    f"-> fuse_{name}{suffix}"
                )
            final = self.final_names[k]
            lines.append(
                f"{final}: crop at offset {self.crops[final]} to align with the input image"
            )
        return "\n".join(lines)


class Head(nn.Module):
    """Head ``index`` of a several-head FCN as a one-head net: (N, C_in, H, W) -> its logits.

    ``model`` is a submodule: ``eval()``, ``to()`` and the state_dict reach it.
    """

    def __init__(self, model: nn.Module, index: int) -> None:
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, seeds)[self.index]


def head_modules(model: nn.Module) -> list[nn.Module]:
    """One one-head module per head of ``model``, in order: a :class:`Head` each for a
    net with several heads (SIFT Flow's semantic and geometric), ``model`` itself for
    a net with one (or any module without ``heads``)."""
    count = len(getattr(model, "heads", "_"))
    return [Head(model, k) for k in range(count)] if count > 1 else [model]


class SampleDropout(nn.Dropout):
    """Dropout whose masks can be a function of each sample's seed.

    Called with ``seeds`` (N,), sample i's mask is drawn from a generator seeded
    by ``(seeds[i], salt)``: the same sample gets the same mask whether it is
    trained in one process or on any rank of many, in any batch, before or after
    a resume. ``salt`` tells the layers of one net apart. Without seeds (or in
    eval mode) it is :class:`torch.nn.Dropout`, so it has no parameters or buffers
    and the state_dict is unchanged.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, p: float = 0.5, salt: int = 0) -> None:
        super().__init__(p)
        self.salt = salt

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        if seeds is None or not self.training or self.p == 0:
            return super().forward(x)
        keep = _sample_masks(x.shape, seeds, self.p, self.salt, x.device)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p) if self.p < 1 else 0.0)


@torch.compiler.disable  # a generator per sample: eager, outside any compiled graph
def _sample_masks(
    shape: torch.Size, seeds: torch.Tensor, p: float, salt: int, device: torch.device
) -> torch.Tensor:
    """(N, ...) boolean keep-masks, sample i's drawn from its own generator."""
    masks = []
    for seed in seeds.tolist():
        generator = torch.Generator(device=device).manual_seed((seed * 1_000_003 + salt) % 2**63)
        masks.append(torch.rand(shape[1:], generator=generator, device=device) >= p)
    return torch.stack(masks)


def _fuse(score: torch.Tensor, c_score: int, skip: torch.Tensor, c_skip: int) -> torch.Tensor:
    """Sum of two aligned maps, each cropped at its offset to their common size."""
    h = min(score.shape[-2] - c_score, skip.shape[-2] - c_skip)
    w = min(score.shape[-1] - c_score, skip.shape[-1] - c_skip)
    return (
        score[..., c_score : c_score + h, c_score : c_score + w]
        + skip[..., c_skip : c_skip + h, c_skip : c_skip + w]
    )


def _stage_crop(score_map: CoordMap, num_classes: int) -> tuple[int, int]:
    """(stride, crop) of a coarser stage's scores, upsampled to the input by a fixed
    bilinear kernel of twice the stride (the paper's FCN-32s and FCN-16s)."""
    stride = round(1 / score_map.scale)
    up = Upsample(num_classes, 2 * stride, stride)
    return stride, crop_offset(score_map.then(layer_map(up)), CoordMap())


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def fcn_from_classifier(
    classifier: Classifier,
    *,
    num_classes: int | Sequence[int],
    heads: Sequence[str] = ("",),
    skips: Sequence[str] = (),
    skip_scales: Mapping[str, float] | None = None,
    final_kernel: int = 64,
    learnable_upsampling: bool = False,
    pad: int = 100,
    dropout: float = 0.5,
) -> FCN:
    """Decapitate and convolutionalize ``classifier`` into an FCN (section 4.1).

    The classifier's convolutions are kept; its first two fully connected layers
    become fc6/fc7 (weights reshaped); its last (the ImageNet classifier) is
    dropped. Like the reference nets, the first convolution pads by ``pad`` and
    pooling rounds up, so that any input size yields aligned scores.

    ``pad=100`` is the reference. The 100 pixels exist only so that the unpadded
    fc6 still covers the image; any other ``pad`` (e.g. 1, ordinary "same"
    padding) pads fc6 instead, which costs about half the compute at 500x500.
    The crops follow from the geometry either way.

    ``classifier`` is left as it was: the FCN gets copies of its layers.
    ``num_classes`` and ``heads``: see :class:`FCN`.
    """
    features = copy.deepcopy(classifier.features)
    features[0].padding = (pad, pad)
    for m in features:
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = True
    linears = [m for m in classifier.classifier if isinstance(m, nn.Linear)]
    fc6 = linear_to_conv(linears[0], feature_channels(features))  # a new layer: weights copied
    if pad != REFERENCE_PAD:
        if fc6.kernel_size[0] % 2 == 0:
            raise ConfigError(
                f"pad={pad} needs an odd fc6 kernel to stay aligned; "
                f"{type(classifier).__name__} has {fc6.kernel_size[0]}: use pad={REFERENCE_PAD}"
            )
        fc6.padding = ((fc6.kernel_size[0] - 1) // 2,) * 2
    fc7 = linear_to_conv(linears[1], fc6.out_channels)
    return FCN(
        features,
        fc6,
        fc7,
        taps={tap.name: tap.index for tap in classifier.feature_info},
        num_classes=num_classes,
        heads=heads,
        skips=skips,
        skip_scales=skip_scales,
        final_kernel=final_kernel,
        learnable_upsampling=learnable_upsampling,
        dropout=dropout,
    )
