"""Inference: a loaded model that turns images of any size into label maps."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcnseg.checkpoint import model_from_checkpoint
from fcnseg.datasets import IMAGE_SUFFIXES
from fcnseg.images import DataError, read_image, to_rgb
from fcnseg.transforms import normalize_image

ImageLike = str | os.PathLike | np.ndarray | Image.Image


class Segmenter:
    """Loads once, then segments images: ``predict(images)`` -> label maps.

    Args:
        model: an FCN (N, 3, H, W) -> (N, C, H, W).
        normalization: how its weights expect pixels (``imagenet`` or ``caffe``).
        device: where to run; default CUDA if available, else CPU.

    Example:
        >>> import fcnseg, numpy as np
        >>> seg = Segmenter(fcnseg.build_model("fcn32s", 3, width=0.125))
        >>> seg.predict([np.zeros((20, 30, 3), np.uint8)])[0].shape
        (20, 30)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        normalization: str = "imagenet",
        device: str | torch.device | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.normalization = normalization

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> Segmenter:
        """A Segmenter for a checkpoint written by ``fcnseg train``."""
        model, ckpt = model_from_checkpoint(path)
        seg = cls(model, normalization=ckpt.get("normalization", "imagenet"), **kwargs)
        seg.checkpoint = ckpt
        return seg

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, C, H, W) float32 logits."""
        return self.model(batch.to(self.device)).float()

    def predict(self, images: ImageLike | Sequence[ImageLike]) -> list[np.ndarray]:
        """Label maps (H, W) uint8, one per image, each of its image's own size.

        Images may be paths, PIL images or (H, W, 3) / (H, W) uint8 arrays, of mixed sizes.
        """
        if isinstance(images, str | os.PathLike | np.ndarray | Image.Image):
            images = [images]
        return [self._predict_one(as_rgb(im)) for im in images]

    def _predict_one(self, image: np.ndarray) -> np.ndarray:
        x = normalize_image(image, self.normalization)[None]
        return self.logits(x).argmax(1)[0].to(torch.uint8).cpu().numpy()


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


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            paths.append(p)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{item}: no such file, folder or matching glob")
            paths += [Path(m) for m in matches if Path(m).is_file()]
    return paths
