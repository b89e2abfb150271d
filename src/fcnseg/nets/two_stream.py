"""Late fusion of two input modalities: two FCNs whose scores are summed (paper section 5, NYUDv2).

The paper's best NYUDv2 net runs one FCN-32s on the colour image and another on
HHA (horizontal disparity, height above ground, angle with gravity: depth as
three image-like channels), sums their ``score_fr`` outputs with weights
0.5 / 0.5 and upsamples the sum once. The two streams share nothing but the
geometry, so their scores align without a crop.

Input: one tensor holding both inputs along the channels, the colour image's
first: (N, 3 + 3, H, W) for colour + HHA. Each stream reads its own
``in_channels`` of them, in order.

State_dict names: each stream's under its name (``color.features.0.weight``,
``hha.score_fr.weight``); the reference names the same layers ``conv1_1color``
and ``score_frhha`` (see :mod:`fcnseg.nets.caffe_names`). The fused scores are
upsampled by the first stream's final upsampler (``color.upscore``, the
reference's ``upscore``); the other streams' final upsamplers are not used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from fcnseg.nets.fcn import FCN


class TwoStreamFCN(nn.Module):
    """FCNs on consecutive channel groups of one input, their scores summed with fixed weights.

    Args:
        streams: name -> single-head FCN, in input-channel order; all of the same
            geometry and classes.
        weights: each stream's factor in the sum (the reference's 0.5, 0.5).

    Shapes: (N, sum of the streams' in_channels, H, W) -> logits (N, num_classes, H, W).

    Example:
        >>> import torch, fcnseg
        >>> model = fcnseg.build_model("fcn32s-color-hha", 40, width=0.0625).eval()
        >>> model(torch.randn(1, 6, 20, 30)).shape
        torch.Size([1, 40, 20, 30])
    """

    def __init__(self, streams: Mapping[str, FCN], weights: Sequence[float]) -> None:
        super().__init__()
        if len(weights) != len(streams):
            raise ValueError(f"{len(streams)} streams need as many weights, got {len(weights)}")
        first = next(iter(streams.values()))
        for name, stream in streams.items():
            if len(stream.heads) != 1 or stream.crops != first.crops:
                raise ValueError(f"stream {name!r}: not a single-head FCN of the first's geometry")
            self.add_module(name, stream)
        self.stream_names = tuple(streams)
        self.weights = tuple(float(w) for w in weights)

    @property
    def streams(self) -> tuple[FCN, ...]:
        return tuple(getattr(self, name) for name in self.stream_names)

    @property
    def in_channels(self) -> int:
        return sum(stream.in_channels for stream in self.streams)

    @property
    def crops(self) -> dict[str, int]:
        """The crops of the first stream, whose final upsampler the fused scores take."""
        return self.streams[0].crops

    def score(self, x: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """The fused scores (the reference's ``score_fused``), before upsampling.

        Shapes: (N, C_in, H, W) -> (N, num_classes, H', W').
        """
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        fused = None
        for stream, weight, part in zip(self.streams, self.weights, self._split(x), strict=True):
            score = weight * stream.score(part, seeds)
            fused = score if fused is None else fused + score
        return fused

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, num_classes, H, W); ``seeds``: see :meth:`fcnseg.nets.fcn.FCN.forward`
        (each stream draws its dropout masks from the same seeds)."""
        return self.streams[0].upsample(0, self.score(x, seeds), x.shape[-2:])

    def _split(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(x, [stream.in_channels for stream in self.streams], dim=1))

    def describe_geometry(self) -> str:
        """The first stream's crops, and how the streams are fused."""
        pairs = zip(self.stream_names, self.weights, strict=True)
        terms = " + ".join(f"{w:g} {name}.score_fr" for name, w in pairs)
        return f"score_fused = {terms}\n" + self.streams[0].describe_geometry()
