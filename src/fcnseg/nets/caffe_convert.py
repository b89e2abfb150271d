"""The reference's Caffe weights in fcnseg's nets: layer names mapped, every shape checked.

The reference names each layer in its ``net.py`` (``conv1_1``, ``fc6``,
``score_fr``, ``upscore2``, ...); :mod:`fcnseg.nets.caffe_names` maps those names
onto fcnseg's modules for every registered model. Each layer's blobs must have
the module's shapes (legacy 4-D blobs with leading 1s fit too); what the file
lacks, what it has over and what has another shape is named in one line.

Caffe's input is BGR on 0-255 minus a mean; fcnseg's ``caffe`` normalisation feeds
exactly that (:func:`fcnseg.data.transforms.normalize_image`), so the first
convolution's weights are taken as they are, channel 0 still blue.

The reference's upsampling layers are fixed bilinear deconvolutions (``lr_mult: 0``):
for a model with fixed upsampling their blobs are checked to be that kernel and
not loaded; a model with learnable upsampling takes them as weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fcnseg.nets.caffe_names import REFERENCE_NAMES
from fcnseg.nets.caffemodel import CaffeLayer
from fcnseg.nets.registry import build_model
from fcnseg.nets.upsample import Upsample, bilinear_kernel
from fcnseg.nets.weights import WeightsError


def reference_names(model_name: str) -> dict[str, str]:
    """Caffe layer name -> module path for a registered model (:data:`REFERENCE_NAMES`).

    Raises:
        WeightsError: the model has no Caffe reference.
    """
    if model_name not in REFERENCE_NAMES:
        raise WeightsError(
            f"model {model_name!r} has no Caffe reference to read weights for; "
            f"caffemodels fit {', '.join(REFERENCE_NAMES)}"
        )
    return REFERENCE_NAMES[model_name]


def num_classes_in(layers: Mapping[str, CaffeLayer], names: Mapping[str, str], source: str) -> int:
    """The class count of a caffemodel: the outputs of its (first) ``score_fr`` layer."""
    score = next(c for c, path in names.items() if path.rsplit(".", 1)[-1].startswith("score_fr"))
    layer = layers.get(score)
    if layer is None or not layer.blobs:
        raise WeightsError(f"{source}: no {score} layer, so no classes to read")
    return layer.blobs[0].shape[0]


def width_in(
    layers: Mapping[str, CaffeLayer], names: Mapping[str, str], model_name: str, source: str
) -> float:
    """The channel multiplier of a caffemodel's net: its first convolution's outputs over
    those of the published net (1.0 for the reference's files)."""
    first, path = next((c, p) for c, p in names.items() if p.endswith("features.0"))
    layer = layers.get(first)
    if layer is None or not layer.blobs:
        raise WeightsError(f"{source}: no {first} layer, so no width to read")
    with torch.device("meta"):  # shapes only: no memory, no init
        published = build_model(model_name, 1).get_submodule(path).out_channels
    return layer.blobs[0].shape[0] / published


def is_bilinear(blob: np.ndarray) -> bool:
    """Whether a deconvolution blob (C, C, k, k) is the reference's fixed upsampling:
    the bilinear kernel on the diagonal (class c to class c), zeros elsewhere."""
    if blob.ndim != 4 or blob.shape[0] != blob.shape[1] or blob.shape[2] != blob.shape[3]:
        return False
    channels, size = blob.shape[0], blob.shape[2]
    expected = np.zeros(blob.shape, np.float64)
    expected[range(channels), range(channels)] = bilinear_kernel(size).double().numpy()
    return bool(np.abs(blob - expected).max() <= 1e-6)


def learned_upsampling(layers: Mapping[str, CaffeLayer]) -> list[str]:
    """The deconvolution layers of a caffemodel that do not hold the bilinear kernel:
    upsampling that was learned (the paper's original nets) rather than fixed."""
    return [
        name
        for name, layer in layers.items()
        if layer.type == "Deconvolution" and not all(is_bilinear(b) for b in layer.blobs)
    ]


def _fit(blob: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``blob`` in ``shape``, or None. Legacy blobs are 4-D with leading 1s (a bias is
    (1, 1, 1, C)): those fit once the leading 1s are dropped on both sides."""
    if blob.shape == shape:
        return blob
    strip = lambda s: s[next((i for i, d in enumerate(s) if d != 1), len(s)) :]  # noqa: E731
    if blob.size == math.prod(shape) and strip(blob.shape) == strip(shape):
        return blob.reshape(shape)
    return None


def fixed_scales(model: nn.Module) -> dict[str, float]:
    """The reference's ``Scale`` layers of a net with scaled skips (FCN-8s at-once):
    ``{"scale_pool4": 0.01, "scale_pool3": 0.0001}``. Like the upsampling they are fixed
    (``lr_mult: 0``), so their blobs are checked to hold that constant, not loaded."""
    return {f"scale_{tap}": value for tap, value in getattr(model, "skip_scales", {}).items()}


def state_dict_from_caffe(
    model: nn.Module, layers: Mapping[str, CaffeLayer], names: Mapping[str, str], source: str
) -> dict[str, torch.Tensor]:
    """The state_dict of ``model`` with the caffemodel's weights, every shape checked.

    Args:
        model: a registered FCN (any width; fixed or learnable upsampling).
        layers: :func:`fcnseg.nets.caffemodel.read_caffemodel`'s result.
        names: Caffe layer name -> module path (:func:`reference_names`).
        source: the file, for messages.

    Returns:
        fcnseg key -> float32 tensor (packed blobs: views of the file's buffer), for
        every module the reference names.

    Raises:
        WeightsError: one line naming the layers the file lacks, those it has over,
            those of another shape, fixed scales of another value, and upsampling
            layers that are not bilinear while the model's upsampling is fixed.
    """
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise WeightsError(f"{source}: the reference Caffe nets have no batch norm")
    state: dict[str, torch.Tensor] = {}
    missing, shapes, learned, scales = [], [], [], []
    for caffe, path in names.items():
        layer = layers.get(caffe)
        if layer is None or not layer.blobs:
            missing.append(caffe)
            continue
        tensors, problem = _layer_state(caffe, layer, path, model.get_submodule(path))
        state |= tensors
        if problem == "learned":
            learned.append(caffe)
        elif problem:
            shapes.append(problem)
    for caffe, value in fixed_scales(model).items():
        blobs = layers[caffe].blobs if caffe in layers else []
        if not blobs:
            missing.append(caffe)
        elif not all(np.allclose(b, value, rtol=1e-6, atol=0) for b in blobs):
            scales.append(f"{caffe} (file {blobs[0].flat[0]:g}, model {value:g})")
    known = set(names) | set(fixed_scales(model))
    leftover = [name for name, layer in layers.items() if layer.blobs and name not in known]
    problems = [
        f"{what}: {', '.join(items)}"
        for what, items in (
            ("missing layers", missing),
            ("layers left over", leftover),
            ("shape mismatch", shapes),
            ("fixed scales differ", scales),
        )
        if items
    ]
    if problems:
        model_name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise WeightsError(f"{source} does not fit {model_name}: " + "; ".join(problems))
    if learned:
        raise WeightsError(
            f"{source}: {', '.join(learned)} hold learned upsampling, not the fixed bilinear "
            "kernel: build the model with learnable upsampling to use them"
        )
    return state


def _layer_state(
    caffe: str, layer: CaffeLayer, path: str, module: nn.Module
) -> tuple[dict[str, torch.Tensor], str | None]:
    """One layer's tensors by fcnseg key, and what is wrong: None, a shape mismatch to
    report, or ``"learned"`` (a fixed upsampler's blob that is not the bilinear kernel)."""
    if isinstance(module, Upsample) and not module.learnable:
        targets = [(None, (module.channels, module.channels) + (module.kernel_size,) * 2)]
    else:
        targets = [
            (f"{path}.{k}", tuple(p.shape)) for k, p in module.named_parameters(recurse=False)
        ]
    if len(layer.blobs) != len(targets):
        return {}, f"{caffe} ({len(layer.blobs)} blobs, model {len(targets)})"
    fitted = [_fit(blob, shape) for (_, shape), blob in zip(targets, layer.blobs, strict=True)]
    for i, array in enumerate(fitted):
        if array is None:
            return {}, f"{caffe} (blob {i}: file {layer.blobs[i].shape}, model {targets[i][1]})"
    if targets[0][0] is None:
        return {}, None if is_bilinear(fitted[0]) else "learned"
    tensors = {
        key: torch.from_numpy(np.ascontiguousarray(array)).float()
        for (key, _), array in zip(targets, fitted, strict=True)
    }
    return tensors, None
