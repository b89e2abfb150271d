"""Reading images and label maps robustly, and writing label maps and overlays."""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.data.info import IGNORE_INDEX, DataError
from fcnseg.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

BYTES_PER_PIXEL = 640
"""Memory one pixel costs through the published FCN-8s (21 classes, fp32, on a CPU):
measured as about 630 B, mostly conv1's two 64-channel maps and the 21 upsampled scores."""


def _memory_bytes() -> int:
    """This machine's memory, or its container's limit (cgroup v2) where lower."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume 16 GB
        memory = 16 * 2**30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    return min(memory, int(limit)) if limit.isdigit() else memory


MAX_PIXELS = _memory_bytes() // BYTES_PER_PIXEL
"""Largest image (width x height) read by default: the biggest the published FCN-8s can
segment in this machine's memory (40 MP with 24 GiB, 215 MP with 128 GiB). A file that
declares more is refused from its header, before it is decoded."""

MAX_PIXELS_ENV = "FCNSEG_MAX_PIXELS"
"""Environment variable that replaces :data:`MAX_PIXELS` as the default limit (training
reads images through it: ``fcnseg train`` has no ``--max-pixels``)."""


def default_max_pixels() -> int:
    """The pixel limit of readers given none: ``$FCNSEG_MAX_PIXELS`` when set (read at
    each call), else :data:`MAX_PIXELS`.

    Raises:
        ConfigError: the variable is set but not a whole number >= 1.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={text!r}: must be a whole number of pixels >= 1")
    return value


def _open_past_pillow_limit(path: str | os.PathLike) -> Image.Image | None:
    """Open ``path`` lazily as :func:`PIL.Image.open` does, minus Pillow's own pixel limit.

    Pillow refuses to open images over twice its ``MAX_IMAGE_PIXELS``; ours (a
    keyword, possibly higher) replaces it without changing Pillow's global. Each
    registered format whose signature accepts the file's first bytes is tried.
    """
    Image.init()
    with open(path, "rb") as f:
        prefix = f.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        if verdict and not isinstance(verdict, str):  # a string says why it is not this format
            try:
                return factory(path)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all (Pillow's own test)
    return None


def open_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Open ``path`` and read its header only (size, mode): nothing is decoded yet.

    Args:
        path: an image file.
        max_pixels: refuse images with more pixels than this (the ``--max-pixels``
            of eval and predict); None: :func:`default_max_pixels`.

    Raises:
        DataError: no such file, a folder, not readable, not an image, or over the limit.
    """
    limit = default_max_pixels() if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():  # over Pillow's limit: ours decides, and says so
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        img = _open_past_pillow_limit(path)
    except UnidentifiedImageError:
        img = None
    except (OSError, SyntaxError) as e:
        raise read_error(path, e) from None
    if img is None:
        raise DataError(f"{path}: not an image file")
    width, height = img.size
    if width * height > limit:
        img.close()
        raise DataError(
            f"{path}: {width}x{height} pixels ({width * height:,}) is over the limit of "
            f"{limit:,}; {_how_to_raise(max_pixels)} if it fits in memory"
        )
    return img


def _how_to_raise(max_pixels: int | None) -> str:
    """How the user raises the limit that applied: the flag that set it, or else the
    variable (every command) and the flag (the commands that have one)."""
    if max_pixels is not None:
        return "raise it with --max-pixels"
    return f"raise it with the environment variable {MAX_PIXELS_ENV} (eval, predict: --max-pixels)"


def read_error(path: str | os.PathLike, error: OSError | SyntaxError) -> DataError:
    """The one line for an image file that cannot be read: the system's reason when
    it has one (a folder, no permission, no such file), else Pillow's (damaged data)."""
    if isinstance(error, FileNotFoundError):
        return DataError(f"{path}: no such file")
    if isinstance(error, IsADirectoryError):
        return DataError(f"{path}: is a folder, not an image file")
    if isinstance(error, PermissionError):
        return DataError(f"{path}: permission denied (the file cannot be read)")
    if isinstance(error, OSError) and error.errno is not None:
        return DataError(f"{path}: cannot read the file ({error.strerror or error})")
    return DataError(f"{path}: cannot read image ({error}); is it truncated?")


def _open(path: str | os.PathLike, max_pixels: int | None) -> Image.Image:
    img = open_image(path, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError) as e:
        raise read_error(path, e) from None
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


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, upright according to its EXIF orientation.

    Images over ``max_pixels`` (None: :func:`default_max_pixels`) are refused before decoding.
    """
    img = _open(path, max_pixels)
    return to_rgb(ImageOps.exif_transpose(img))


def read_label(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a label map as stored: index PNG (mode P/L) -> (H, W) uint8, RGB -> (H, W, 3).

    Label maps over ``max_pixels`` (None: :func:`default_max_pixels`) are refused before
    decoding.
    """
    img = _open(path, max_pixels)
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
