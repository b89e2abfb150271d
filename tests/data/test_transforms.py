import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcnseg.data.transforms import Normalize, normalize_image, train_transform

# Class c is drawn in colour PALETTE[c]: random colours, so that no blend of two
# (bilinear interpolation at a block edge) comes within 1/2 of a third.
PALETTE = np.random.default_rng(0).integers(0, 256, (7, 3)).astype(np.uint8)


def classes_of(x: torch.Tensor) -> torch.Tensor:
    """Normalised image (3, H, W) -> (H, W) class whose colour it is, -1 where it is none."""
    std, mean = torch.tensor([0.229, 0.224, 0.225]), torch.tensor([0.485, 0.456, 0.406])
    rgb = (x * std[:, None, None] + mean[:, None, None]) * 255
    dist = (rgb[None] - torch.tensor(PALETTE, dtype=torch.float32)[:, :, None, None]).abs().amax(1)
    best, cls = dist.min(0)
    return torch.where(best < 0.5, cls, -1)


def interior(cls: torch.Tensor, radius: int) -> torch.Tensor:
    """(H, W) bool: pixels whose whole (2r+1)^2 window has their class (not -1)."""
    padded = F.pad(cls[None, None].float(), (radius,) * 4, value=-1.0)
    window = F.unfold(padded, 2 * radius + 1).view(-1, *cls.shape)
    return (window == cls.float()).all(0) & (cls >= 0)


def scene(block: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image (h, w, 3) of class-coloured ``block`` x ``block`` squares, and its label."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, len(PALETTE), (-(-h // block), -(-w // block)))
    label = np.kron(grid, np.ones((block, block), np.int64))[:h, :w]
    label[:3, :5] = 255  # void keeps its place too; its pixels are drawn in class 0's colour
    return PALETTE[np.where(label == 255, 0, label)], label


def check_aligned(x: torch.Tensor, y: torch.Tensor, radius: int) -> int:
    """Assert the label is the class of the image wherever that is unambiguous; return how many
    pixels were compared. Padding must be a zero (mean) image under a void label."""
    pad = (x == 0).all(0)
    assert (y[pad] == 255).all()
    cls = classes_of(x)
    where = interior(cls, radius) & (y != 255)
    assert torch.equal(y[where], cls[where])
    return int(where.sum())


def test_crop_and_flip_keep_every_pixel_aligned():
    """Without scaling nothing is interpolated: every pixel is compared (1x1 blocks)."""
    image, label = scene(1, 37, 45)
    t = train_transform(scale=None, crop=48, flip=True)
    flips = set()
    for seed in range(40):
        x, y = t(image, label, random.Random(seed))
        assert x.shape == (3, 48, 48) and y.shape == (48, 48) and y.dtype == torch.int64
        assert check_aligned(x, y, radius=0) == (y != 255).sum() >= 37 * 45 - 15
        flips.add(bool((y[:37, :45] != torch.from_numpy(label)).any()))
    assert flips == {True, False}  # both ways were drawn
    small = train_transform(scale=None, crop=24, flip=True)
    offsets = set()
    for seed in range(40):
        x, y = small(image, label, random.Random(seed))
        assert check_aligned(x, y, radius=0) == (y != 255).sum()
        offsets.add(y.numpy().tobytes())
    assert len(offsets) > 10  # the crops moved


def test_scale_crop_flip_keep_image_and_label_aligned():
    """Scaling interpolates the image (bilinear) and the label (nearest) differently: the
    nearest source pixel can lie just outside the two that bilinear blends, but never
    farther than the neighbouring output pixel's. So compare at pixels whose 3x3 window
    has one colour (12 px blocks are still 6 px at scale 0.5)."""
    image, label = scene(12, 70, 90, seed=1)
    t = train_transform(scale=(0.5, 2.0), crop=64, flip=True)
    compared = labelled = 0
    for seed in range(40):
        x, y = t(image, label, random.Random(seed))
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        n = check_aligned(x, y, radius=1)
        assert n > 0
        compared, labelled = compared + n, labelled + int((y != 255).sum())
    assert compared > labelled / 4  # enough of the image is unambiguous


def test_transforms_draw_only_from_the_rng_they_are_given():
    image, label = scene(4, 40, 50)
    t = train_transform(scale=(0.5, 2.0), crop=32, flip=True)
    random.seed(123)
    state = random.getstate()
    a = t(image, label, random.Random(7))
    assert random.getstate() == state
    b = t(image, label, random.Random(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outputs = {t(image, label, random.Random(s))[0].sum().item() for s in range(10)}
    assert len(outputs) > 5


def test_imagenet_and_caffe_normalisation():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb = image.astype(np.float64).transpose(2, 0, 1)
    imagenet = (rgb / 255 - np.array([0.485, 0.456, 0.406])[:, None, None]) / np.array(
        [0.229, 0.224, 0.225]
    )[:, None, None]
    caffe = rgb[::-1] - np.array([104.00699, 116.66877, 122.67892])[:, None, None]  # B, G, R
    for mode, expected in (("imagenet", imagenet), ("caffe", caffe)):
        x = normalize_image(image, mode)
        assert x.shape == (3, 5, 7) and x.dtype == torch.float32
        np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-4)
    x, y = Normalize("caffe")(image, np.zeros((5, 7), np.uint8))
    np.testing.assert_allclose(x.numpy(), caffe, rtol=0, atol=1e-4)
    assert y.dtype == torch.int64
    with pytest.raises(ValueError, match="unknown normalization 'bgr'"):
        Normalize("bgr")
