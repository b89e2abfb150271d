"""Reading images and label maps robustly, and writing label maps and overlays."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.data.info import IGNORE_INDEX, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file") from None
    except (OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read image ({e}); is it truncated?") from None
    return img


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image as (H, W, 3) uint8 RGB: grayscale, palette, RGBA and 16-bit included."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        flat = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(flat, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, upright according to its EXIF orientation."""
    img = _open(path)
    return to_rgb(ImageOps.exif_transpose(img))


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label map as stored: index PNG (mode P/L) -> (H, W) uint8, RGB -> (H, W, 3)."""
    img = _open(path)
    if img.mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I"):
        a = np.asarray(img)
        if a.max() > 255:
            raise DataError(f"{path}: label values up to {a.max()} do not fit 8 bits")
        return a.astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def palette(colors: Sequence[tuple[int, int, int]]) -> list[int]:
    """A 768-entry PNG palette: class colours first, void (255) white."""
    pal = [c for rgb in colors for c in rgb]
    pal += [0] * (768 - len(pal))
    pal[3 * IGNORE_INDEX : 3 * IGNORE_INDEX + 3] = [255, 255, 255]
    return pal


def save_label(label: np.ndarray, path: str | os.PathLike, colors) -> None:
    """Write a (H, W) label map as a palette PNG: indices readable back, colours viewable."""
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(palette(colors))
    img.save(path)


def colorize(label: np.ndarray, colors) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 colours; void is white."""
    lut = np.array(palette(colors), dtype=np.uint8).reshape(256, 3)
    return lut[label]


def overlay(image: np.ndarray, label: np.ndarray, colors, alpha: float = 0.5) -> np.ndarray:
    """Image and its labels side by side: the image, then the labels blended over it."""
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colorize(label, colors)
    return np.concatenate([image, blend.astype(np.uint8)], axis=1)
