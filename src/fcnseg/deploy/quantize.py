"""Post-training static int8 quantization (``fcnseg quantize``), with onnxruntime's toolkit.

The checkpoint is exported to ONNX (:func:`fcnseg.deploy.export.export_onnx`), its
activations' ranges are measured on a few dozen of the user's images (calibration), and
its convolutions are rewritten in the QDQ form: int8 weights per output channel, uint8
activations. onnxruntime and OpenVINO both run that file in int8
(:class:`~fcnseg.deploy.engines.OnnxModel`, :class:`~fcnseg.deploy.engines.OpenVinoModel`).

Kept in float (``keep_float``): conv1_1 (``features.0``), whose input is the image itself
(its 8-bit range after normalisation is coarser than the pixels' own steps), and the
score layers (``score_fr``, ``score_pool4``, ``score_pool3``: a 1x1 convolution per class,
a rounding of which moves the argmax directly), together under 1% of the FLOPs; and the
upsampling (the deconvolutions and the final bilinear product, which are not
convolutions in the graph). Activation ranges are each image's min and max, averaged
over the calibration images (onnxruntime's ``CalibMovingAverage``), which keeps more
labels than the global min and max a single bright image sets (measured on CamVid's
held-out drive: 99.07% of labels as fp32 against 98.64%, with 98.98% for the 99.999th
percentile at 10x the memory).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fcnseg.atomic import replaced_atomically
from fcnseg.data.transforms import normalize_image
from fcnseg.deploy.engines import PRECISION_KEY, MissingExtra
from fcnseg.deploy.export import (
    CHECKPOINT_INFO,
    CHECKPOINT_SHA256,
    INFO_KEYS,
    check_target,
    export_onnx,
    exportable,
    file_sha256,
)
from fcnseg.errors import ConfigError
from fcnseg.train.checkpoint import model_from_checkpoint

if TYPE_CHECKING:
    import onnx

QUANTIZE_HELP = "fcnseg quantize needs onnxruntime and onnx: pip install 'fcnseg[cpu]'"
KEEP_FLOAT = ("features.0", "score")
"""Name prefixes of the convolutions (their weights') that stay in float by default."""
FLOAT_LAYERS_KEY = "fcnseg.float_layers"
"""The ONNX metadata key listing the convolutions an int8 model keeps in float."""


@dataclass(frozen=True)
class Quantized:
    """What :func:`quantize_checkpoint` wrote: the file, and which layers are int8."""

    path: Path
    int8_layers: tuple[str, ...]
    float_layers: tuple[str, ...]


def quantize_checkpoint(
    checkpoint: str | os.PathLike,
    images: Sequence[np.ndarray],
    output: str | os.PathLike,
    *,
    keep_float: Sequence[str] = KEEP_FLOAT,
) -> Quantized:
    """Write ``output``: ``checkpoint`` quantized to int8 (QDQ, per-channel weights), its
    activation ranges (min/max) measured on ``images``, (H, W, 3) uint8 RGB.

    The file carries the checkpoint's sha256 and description, as an export does
    (:mod:`fcnseg.deploy.export`), so ``predict``, ``eval`` and ``serve`` run it alone.
    An existing ``output`` is replaced only if fcnseg wrote it.

    Raises:
        ConfigError: no images, a net the export does not cover, or an ``output`` that
            is the checkpoint, a folder or a file fcnseg did not write.
        MissingExtra: onnxruntime or onnx is not installed.
    """
    try:
        import onnx
        import onnxruntime  # noqa: F401  (its quantization toolkit, in quantize_onnx)
    except ImportError:
        raise MissingExtra(QUANTIZE_HELP) from None
    if not images:
        raise ConfigError("--calibrate: no images to calibrate on")
    check_target(output, checkpoint)
    model, ckpt = model_from_checkpoint(checkpoint)
    if not exportable(model):
        raise ConfigError(f"{checkpoint}: quantize covers nets of one head over RGB images")
    with tempfile.TemporaryDirectory(prefix="fcnseg-quantize-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, fp32)
        normalization = ckpt.get("normalization", "imagenet")
        int8_layers, floats = quantize_onnx(fp32, images, normalization, int8, keep_float)
        proto = onnx.load_model(str(int8))
    metadata = {
        CHECKPOINT_SHA256: file_sha256(checkpoint),
        CHECKPOINT_INFO: json.dumps({k: ckpt[k] for k in INFO_KEYS if k in ckpt}),
        PRECISION_KEY: "int8",
        FLOAT_LAYERS_KEY: ",".join(floats),
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    with replaced_atomically(output) as tmp_file:
        onnx.save_model(proto, str(tmp_file))
    return Quantized(Path(output), int8_layers, floats)


def quantize_onnx(
    fp32: str | os.PathLike,
    images: Sequence[np.ndarray],
    normalization: str,
    output: str | os.PathLike,
    keep_float: Sequence[str] = KEEP_FLOAT,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Quantize the FCN exported at ``fp32`` into ``output`` (QDQ, metadata left as it is),
    calibrated on ``images`` normalised as ``normalization`` says.

    Returns:
        The names of the convolutions now int8, and of those kept in float.
    """
    import onnx
    from onnxruntime import quantization as q

    convs = _convolutions(onnx.load_model(str(fp32), load_external_data=False))
    unmatched = [p for p in keep_float if not any(c.startswith(p) for c in convs)]
    if unmatched:
        raise ConfigError(
            f"--keep-float {' '.join(unmatched)}: names no convolution of this net; its "
            f"convolutions are {', '.join(convs)}"
        )
    floats = tuple(c for c in convs if c.startswith(tuple(keep_float)))
    q.quantize_static(
        str(fp32),
        str(output),
        _Calibration(images, normalization),
        quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        op_types_to_quantize=["Conv"],
        nodes_to_exclude=[convs[c] for c in floats],
        # The ranges are reduced in the graph: an image adds two numbers per tensor.
        calibrate_method=q.CalibrationMethod.MinMax,
        extra_options={"CalibMovingAverage": True},
    )
    return tuple(c for c in convs if c not in floats), floats


def _convolutions(proto: onnx.ModelProto) -> dict[str, str]:
    """Each Conv node of an exported FCN by its layer's name (its weight's, less
    ``.weight``: ``features.0``, ``fc6``, ``score_fr``) -> the node's name."""
    return {
        node.input[1].removesuffix(".weight"): node.name
        for node in proto.graph.node
        if node.op_type == "Conv"
    }


class _Calibration:
    """onnxruntime's calibration reader: one normalised image (1, 3, H, W) per call."""

    def __init__(self, images: Sequence[np.ndarray], normalization: str) -> None:
        self.batches: Iterator[dict] = (
            {"image": normalize_image(image, normalization)[None].numpy()} for image in images
        )

    def get_next(self) -> dict | None:
        return next(self.batches, None)
