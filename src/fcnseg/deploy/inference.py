"""Inference: a loaded model that turns images of any size into label maps."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcnseg.data.images import read_image, to_rgb
from fcnseg.data.info import DataError
from fcnseg.data.transforms import normalize_image
from fcnseg.deploy import export
from fcnseg.deploy.backend import BackendChoice, choose_backend, float_precision
from fcnseg.deploy.engines import (
    PRECISION_KEY,
    EngineModel,
    OnnxModel,
    OpenVinoModel,
    installed_engines,
    onnx_metadata,
)
from fcnseg.deploy.tta import with_tta
from fcnseg.errors import ConfigError
from fcnseg.nets.convolutionalize import fully_connected_as_matmuls
from fcnseg.nets.fcn import head_modules
from fcnseg.nets.weights import NORMALIZATIONS, same_scale
from fcnseg.train.checkpoint import model_from_checkpoint
from fcnseg.train.device import (
    PRECISION_NAMES,
    cpu_flags,
    memory_format,
    resolve_precision,
    select_device,
    warn_emulated_bf16,
)

ImageLike = str | os.PathLike | np.ndarray | Image.Image


def prepare_for_inference(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool
) -> torch.nn.Module:
    """``model`` in place: eval mode, on ``device``, cast once to ``dtype``, laid out
    channels-last if asked, and on a CPU with fc6, fc7 and the score layers run as
    matrix products (:func:`fcnseg.nets.convolutionalize.fully_connected_as_matmuls`)."""
    model = model.eval().to(device, dtype, memory_format=memory_format(channels_last))
    if device.type == "cpu":
        fully_connected_as_matmuls(model)
    return model


class Segmenter:
    """Loads once, then segments images: ``predict(images)`` -> label maps.

    The model is put in eval mode, cast once to the chosen precision (so no
    weight is converted per call), laid out channels-last and optionally compiled
    (:func:`prepare_for_inference`); this changes the module passed in, so pass a
    copy to keep the original; calls run under ``torch.inference_mode``. The final
    bilinear upsampling and its crop are one separable product per class (see
    :meth:`fcnseg.nets.upsample.Upsample.upsample_crop`). Same-size images are batched.

    Args:
        model: an FCN (N, 3, H, W) -> (N, C, H, W), one with several heads (SIFT
            Flow's ``*-sem-geo``: :meth:`logits` and :meth:`as_module` take ``head``,
            :meth:`predict` labels with the first), or an
            :class:`~fcnseg.deploy.engines.EngineModel` (which runs in its own precision:
            then ``precision`` is ``auto`` or that one).
        precision: ``auto`` (bf16 where the hardware has it, else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (GPU); bf16 on a CPU that emulates it warns
            (:class:`~fcnseg.train.device.EmulatedBf16Warning`).
        device: where to run; default CUDA if available, else CPU.
        compile: wrap the model in ``torch.compile``; a string is its ``mode``
            (``"reduce-overhead"`` replays CUDA graphs on a GPU).
        channels_last: NHWC memory layout (default).
        normalization: how the weights expect pixels (``imagenet`` or ``caffe``).
        batch_size: most images per forward pass in :meth:`predict`.
        tta_flip, tta_scales: test-time augmentation (:mod:`fcnseg.deploy.tta`):
            probabilities averaged over the left-right mirror and these resize
            factors; :meth:`logits` then returns their log.

    Example:
        >>> import fcnseg, numpy as np
        >>> seg = Segmenter(fcnseg.build_model("fcn32s", 3, width=0.125), precision="fp32")
        >>> seg.predict([np.zeros((20, 30, 3), np.uint8)])[0].shape
        (20, 30)
    """

    def __init__(
        self,
        model,
        *,
        precision: str = "auto",
        device: str | torch.device | None = None,
        compile: bool | str = False,
        channels_last: bool = True,
        normalization: str = "imagenet",
        batch_size: int = 8,
        tta_flip: bool = False,
        tta_scales: Sequence[float] = (1.0,),
    ) -> None:
        self.device = select_device(device or "auto")
        self.normalization, self.batch_size = normalization, batch_size
        self.in_channels = getattr(model, "in_channels", 3)
        if isinstance(model, EngineModel):  # an exported model: runs as the engine was set
            if precision not in ("auto", model.precision):
                raise ConfigError(
                    f"--precision {precision}: this {model.engine} model runs in {model.precision}"
                )
            self.dtype, self.memory_format = torch.float32, None
            self.precision = model.precision
            heads = [model]
        else:
            self.dtype = resolve_precision(precision, self.device)
            warn_emulated_bf16(self.dtype, self.device)
            self.precision = PRECISION_NAMES[self.dtype]
            self.memory_format = memory_format(channels_last)
            model = prepare_for_inference(model, self.device, self.dtype, channels_last)
            # SIFT Flow's nets: one module per head (semantic, geometric), sharing weights
            heads = head_modules(model)
            mode = compile if isinstance(compile, str) else None
            heads = [torch.compile(h, mode=mode) for h in heads] if compile else heads
        self._heads = [with_tta(h, tta_flip=tta_flip, tta_scales=tta_scales) for h in heads]
        self.model = self._heads[0]  # the first head's module, as it runs (export_onnx takes it)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        backend: str = "auto",
        precision: str = "auto",
        device: str | torch.device | None = None,
        onnx_path: str | os.PathLike | None = None,
        normalization: str | None = None,
        **kwargs,
    ) -> Segmenter:
        """A Segmenter for a checkpoint written by ``fcnseg train``, or for an ONNX file
        written by ``fcnseg export`` or ``fcnseg quantize`` (int8).

        ``backend``: ``auto`` takes the fastest engine and precision this CPU has among
        those installed (:mod:`fcnseg.deploy.backend`); ``torch``, ``onnxruntime`` or
        ``openvino`` asks for one. The engines run the checkpoint's ONNX export at
        ``onnx_path`` (default: :func:`~fcnseg.deploy.export.default_onnx_path`), exported again
        whenever it is missing, unreadable or was made from another checkpoint
        (:func:`fcnseg.deploy.export.onnx_for_checkpoint`). ``seg.backend`` says what
        was chosen and why; ``seg.checkpoint`` is the checkpoint's description.

        ``normalization`` feeds the pixels another way than the checkpoint's own, one on the
        same scale (:func:`~fcnseg.nets.weights.same_scale`): e.g. ``imagenet-greyworld-clip``
        for a net trained with ``imagenet-greyworld``, which changes only the pixels the
        balance pushes past 255 (a dusk frame's sky). None: the checkpoint's.
        """
        model, ckpt = load_model_file(path)
        # Checked before an ONNX export or an engine's start, which take seconds.
        normalization = _fed(ckpt.get("normalization", "imagenet"), normalization)
        # An ONNX file runs on an engine, in its own precision: int8 (fcnseg quantize) or float.
        int8 = model is None and onnx_metadata(path).get(PRECISION_KEY) == "int8"
        engines = ("onnxruntime", "openvino")
        on_cpu = backend in engines or model is None
        device = select_device(device or ("cpu" if on_cpu else "auto"))
        # The ONNX export covers nets of one head over RGB images (an ONNX file: so made).
        exportable = model is None or export.exportable(model)
        choice = choose_backend(
            backend,
            precision,
            device=device,
            flags=cpu_flags(),
            installed=installed_engines(),
            int8=int8,
            exportable=exportable,
            compile=bool(kwargs.get("compile")),
        )
        if model is None and choice.backend == "torch":
            raise ConfigError(
                f"--backend {backend}: {path} is an ONNX file, run by onnxruntime or openvino "
                "on the CPU; give one of them, or the checkpoint it was exported from"
            )
        if choice.backend != "torch":
            engine = _engine(choice)
            if model is None:  # an ONNX file: runs as it is
                model = engine(path)
            else:
                onnx_path = onnx_path or export.default_onnx_path(path)
                model = export.onnx_for_checkpoint(model, path, onnx_path, info=ckpt, engine=engine)
        # An engine's model must run in the precision chosen (a cached file is checked here).
        seg = cls(model, precision=choice.precision, device=device, normalization=normalization,
                  **kwargs)  # fmt: skip
        # torch resolves "auto" itself: say what it resolved to.
        seg.checkpoint, seg.backend = ckpt, dataclasses.replace(choice, precision=seg.precision)
        return seg

    @property
    def num_heads(self) -> int:
        """How many heads the net has (SIFT Flow's: 2; an exported model keeps one)."""
        return len(self._heads)

    def as_module(self, head: int = 0) -> torch.nn.Module:
        """This segmenter as a module: (N, 3, H, W) normalised images -> (N, C, H, W)
        float32 logits of ``head`` (:meth:`logits`), for :func:`fcnseg.train.engine.evaluate`."""
        self._check_head(head)
        return _Logits(self, head)

    def _check_head(self, head: int) -> None:
        n = len(self._heads)
        if not 0 <= head < n:
            heads = "one head: 0" if n == 1 else f"{n} heads: 0 to {n - 1}"
            raise ConfigError(f"head {head}: the net has {heads}")

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor, head: int = 0) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, C, H, W) float32 logits; ``head``: which
        of a net's several heads (SIFT Flow's: 0 semantic, 1 geometric)."""
        self._check_head(head)
        model = self._heads[head]
        if self.memory_format is None:
            return model(batch).float()
        x = batch.to(self.device, self.dtype, memory_format=self.memory_format)
        return model(x).float()

    def predict(self, images: ImageLike | Sequence[ImageLike]) -> list[np.ndarray]:
        """Label maps (H, W) uint8, one per image, each of its image's own size.

        Images may be paths, PIL images or (H, W, 3) / (H, W) uint8 arrays, of mixed sizes.
        A net with several heads labels with its first. A net of more input channels
        (NYUDv2's colour + depth or + HHA) is refused: feed it through :meth:`logits`.
        """
        if self.in_channels != 3:
            raise ConfigError(
                f"the net reads {self.in_channels} input channels, not an RGB image; "
                "give Segmenter.logits images normalised with normalize_image"
            )
        if isinstance(images, str | os.PathLike | np.ndarray | Image.Image):
            images = [images]
        arrays = [as_rgb(im) for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(arrays):
            by_size.setdefault(a.shape[:2], []).append(i)
        labels: list[np.ndarray | None] = [None] * len(arrays)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                x = torch.stack([normalize_image(arrays[i], self.normalization) for i in chunk])
                pred = self.logits(x).argmax(1).to(torch.uint8).cpu().numpy()
                for i, p in zip(chunk, pred, strict=True):
                    labels[i] = p
        return labels


class _Logits(torch.nn.Module):
    def __init__(self, segmenter: Segmenter, head: int) -> None:
        super().__init__()
        self.segmenter = segmenter  # not a module: its model keeps its own mode
        self.head = head

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.segmenter.logits(batch, self.head)


def load_model_file(path: str | os.PathLike) -> tuple[torch.nn.Module | None, dict]:
    """A checkpoint's model and dict, or for an ONNX file written by fcnseg (``export``,
    ``quantize``) no torch model and the description it carries."""
    if Path(path).suffix.lower() == ".onnx":
        return None, export.checkpoint_info(path)
    return model_from_checkpoint(path)


def _fed(trained: str, asked: str | None) -> str:
    """The normalisation to feed a net trained with ``trained``: ``asked`` if on its scale."""
    if asked is None or asked == trained:
        return trained
    if asked not in NORMALIZATIONS:
        raise ConfigError(f"--normalization {asked}: not one of {', '.join(NORMALIZATIONS)}")
    if not same_scale(trained, asked):
        scaled = [n for n in NORMALIZATIONS if same_scale(trained, n) and n != trained]
        raise ConfigError(
            f"--normalization {asked}: the net was trained with {trained}, whose pixels are on "
            "another scale; "
            + (f"on its scale: {', '.join(scaled)}" if scaled else "it takes no other")
        )
    return asked


def _engine(choice: BackendChoice):
    """A callable opening an ONNX file with the engine ``choice`` names, in its precision."""
    if choice.backend == "onnxruntime":
        return functools.partial(OnnxModel, threads=torch.get_num_threads())
    compute = float_precision(cpu_flags()) if choice.precision == "int8" else choice.precision
    return functools.partial(OpenVinoModel, precision=compute)


def as_rgb(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array as (H, W, 3) uint8 RGB."""
    if isinstance(image, str | os.PathLike):
        return read_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DataError(f"expected an (H, W, 3) image array, got shape {a.shape}")
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)
