import colorsys
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcnseg.data.info import DataError
from fcnseg.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    normalize_image,
    train_transform,
)

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


def test_the_labels_of_two_heads_get_the_same_geometry():
    """A second map derived from the first (class // 3, void kept) stays so derived through
    scale, crop (with padding) and flip, and each map is what the one-map pipeline makes."""
    image, label = scene(5, 30, 41, seed=2)
    derived = np.where(label == 255, 255, label // 3)
    both = np.stack([label, derived], axis=-1)  # (H, W, 2), as a two-head dataset reads
    t = train_transform(scale=(0.5, 2.0), crop=48, flip=True)
    voids = 0
    for seed in range(30):
        x, y = t(image, both, random.Random(seed))
        assert y.shape == (2, 48, 48) and y.dtype == torch.int64
        first, second = y
        assert torch.equal(second, torch.where(first == 255, 255, first // 3))
        x1, y1 = t(image, label, random.Random(seed))
        assert torch.equal(x, x1) and torch.equal(first, y1)
        voids += int((first == 255).sum())
    assert voids > 0  # padding or the void corner came through


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


def test_reference_dataset_normalisations():
    # The means of nyud_layers.py and siftflow_layers.py: colour as BGR, HHA as stored.
    rng = np.random.default_rng(1)
    color, hha = (rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(2))
    depth = rng.integers(0, 10_000, (4, 6, 1), dtype=np.uint16)
    depth[0, 0] = 0  # no reading
    c = color.astype(np.float64).transpose(2, 0, 1)
    h = hha.astype(np.float64).transpose(2, 0, 1)
    bgr = c[::-1] - np.array([116.190, 97.203, 92.318])[:, None, None]
    hha_fed = h - np.array([132.431, 94.076, 118.477])[:, None, None]
    log_d = np.log(np.maximum(depth[..., 0], 1).astype(np.float64))[None] - 7.844
    sift = c[::-1] - np.array([114.578, 115.294, 108.353])[:, None, None]
    cases = [
        ("nyud", color, bgr),
        ("nyud", np.concatenate([color, hha], 2), np.concatenate([bgr, hha_fed])),
        ("nyud", np.concatenate([color.astype(np.uint16), depth], 2), np.concatenate([bgr, log_d])),
        ("nyud-hha", hha, hha_fed),
        ("siftflow", color, sift),
        # A second image is fed like the first in the ImageNet and Caffe normalisations.
        ("caffe", np.concatenate([color, hha], 2),
         np.concatenate([normalize_image(color, "caffe"), normalize_image(hha, "caffe")])),
    ]  # fmt: skip
    for mode, image, expected in cases:
        x = normalize_image(image, mode)
        assert x.shape == expected.shape and x.dtype == torch.float32
        np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-4)
    with pytest.raises(DataError, match="'siftflow' takes 3 image channels, got 6"):
        normalize_image(np.concatenate([color, hha], 2), "siftflow")
    with pytest.raises(DataError, match="'nyud' takes 3, 4 or 6 image channels, got 5"):
        normalize_image(np.zeros((2, 2, 5), np.uint8), "nyud")


def test_grey_world_normalisation_takes_out_exposure_and_colour_cast():
    rng = np.random.default_rng(2)
    image = rng.integers(1, 64, (5, 7, 3), dtype=np.uint8) * 2  # even, below 128
    rgb = image.astype(np.float64).transpose(2, 0, 1)
    grey = 255 * (0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
    balanced = rgb * grey / rgb.mean((1, 2), keepdims=True)
    expected = normalize_image(np.zeros((5, 7, 3), np.uint8), "imagenet").numpy() + (
        balanced / 255 / np.array([0.229, 0.224, 0.225])[:, None, None]
    )
    x = normalize_image(image, "imagenet-greyworld")
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-4)
    # The same scene twice as bright in red, half as bright in blue (exact on the uint8
    # grid): the same net input.
    cast = image // np.array([1, 1, 2], np.uint8) * np.array([2, 1, 1], np.uint8)
    np.testing.assert_allclose(
        normalize_image(cast, "imagenet-greyworld").numpy(), x.numpy(), rtol=0, atol=1e-4
    )
    black = normalize_image(np.zeros((2, 2, 3), np.uint8), "imagenet-greyworld")
    assert torch.isfinite(black).all()  # a black channel is not divided by 0
    with pytest.raises(DataError, match="'imagenet-greyworld' takes 3 image channels, got 4"):
        normalize_image(np.zeros((2, 2, 4), np.uint16), "imagenet-greyworld")


def test_clipped_grey_world_saturates_like_a_photo():
    # A dusk frame: dark, with a bright sky that the balance pushes past 255.
    image = np.full((4, 5, 3), 20, np.uint8)
    image[0] = (200, 180, 160)
    rgb = image.astype(np.float64).transpose(2, 0, 1)
    grey = 255 * (0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
    balanced = rgb * grey / rgb.mean((1, 2), keepdims=True)
    assert balanced.max() > 255  # the case the clip is for
    zero = normalize_image(np.zeros((4, 5, 3), np.uint8), "imagenet").numpy()
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    x = normalize_image(image, "imagenet-greyworld-clip").numpy()
    np.testing.assert_allclose(x, zero + balanced.clip(0, 255) / 255 / std, rtol=0, atol=1e-4)
    unclipped = normalize_image(image, "imagenet-greyworld").numpy()
    np.testing.assert_allclose(unclipped, zero + balanced / 255 / std, rtol=0, atol=1e-4)
    # Where nothing saturates, the two modes agree.
    mid = np.random.default_rng(3).integers(80, 151, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        normalize_image(mid, "imagenet-greyworld-clip").numpy(),
        normalize_image(mid, "imagenet-greyworld").numpy(),
    )


def random_rgb(h: int = 6, w: int = 7, seed: int = 0) -> torch.Tensor:
    """(3, h, w) float RGB in [0, 1], on the uint8 grid like a decoded photo."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w))).float() / 255


def luma(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb.double()
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_neutral_factors_change_nothing():
    rgb = random_rgb()
    for adjusted in (
        adjust_brightness(rgb, 1.0),
        adjust_contrast(rgb, 1.0),
        adjust_saturation(rgb, 1.0),
        adjust_hue(rgb, 0.0),
        adjust_hue(rgb, 1.0),  # a whole turn
    ):
        torch.testing.assert_close(adjusted, rgb, rtol=0, atol=1e-6)
    image = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(ColorJitter(0.0)(image, None, random.Random(0))[0], image)


def test_brightness_contrast_and_saturation():
    rgb = random_rgb()
    torch.testing.assert_close(adjust_brightness(rgb, 0.5), rgb * 0.5)
    torch.testing.assert_close(adjust_brightness(rgb, 3.0), (rgb * 3).clamp(max=1))
    mid = 0.25 + rgb / 2  # in [0.25, 0.75]: contrast 1.5 clamps nothing
    for factor in (0.0, 0.6, 1.5):
        out = adjust_contrast(mid, factor)
        torch.testing.assert_close(luma(out).mean(), luma(mid).mean())
        torch.testing.assert_close(
            out - luma(out).mean(), factor * (mid - luma(mid).mean()).float()
        )
    grey = adjust_saturation(rgb, 0.0)
    torch.testing.assert_close(grey, luma(rgb).float().expand(3, -1, -1))
    # Saturation keeps each pixel's grey (nothing clamps below 1).
    torch.testing.assert_close(luma(adjust_saturation(rgb, 0.5)), luma(rgb))


def test_hue_turns_like_colorsys():
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    green = adjust_hue(red, 1 / 3)
    torch.testing.assert_close(green, torch.tensor([0.0, 1.0, 0.0])[:, None, None])
    torch.testing.assert_close(adjust_hue(green, 2 / 3), red)
    rgb = random_rgb(5, 5, seed=3)
    rgb[:, 0, 0] = 0.0  # black and a grey: no hue to turn
    rgb[:, 0, 1] = 0.4
    for shift in (0.1, -0.3, 0.25):
        expected = [
            colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
            for h, s, v in (colorsys.rgb_to_hsv(*p) for p in rgb.flatten(1).T.tolist())
        ]
        torch.testing.assert_close(
            adjust_hue(rgb, shift), torch.tensor(expected).T.reshape(3, 5, 5), rtol=0, atol=1e-6
        )


def test_color_jitter_draws_from_its_ranges_and_leaves_the_label():
    image, label = scene(2, 9, 11)
    jitter = ColorJitter(0.4)
    draws = [jitter.draw(random.Random(seed)) for seed in range(200)]
    for i, (low, high) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        values = [d[i] for d in draws]
        assert low <= min(values) < low + 0.05 and high - 0.05 < max(values) <= high
    out, out_label = jitter(image, label, random.Random(5))
    assert out_label is label and out.dtype == np.uint8 and out.shape == image.shape
    again, _ = jitter(image, label, random.Random(5))
    assert np.array_equal(out, again)
    # The same as the four adjustments by hand, in the documented order.
    b, c, s, h = jitter.draw(random.Random(5))
    rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    rgb = adjust_hue(adjust_saturation(adjust_contrast(adjust_brightness(rgb, b), c), s), h)
    expected = (rgb * 255).permute(1, 2, 0).numpy()
    assert np.abs(out - expected).max() <= 0.5 + 1e-3
    assert not np.array_equal(out, image)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ColorJitter(1.0)


def test_color_jitter_stays_in_range_at_full_strength():
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    for extreme in (0.0, 5.0):
        rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        for adjust in (adjust_brightness, adjust_contrast, adjust_saturation):
            out = adjust(rgb, extreme)
            assert out.min() >= 0 and out.max() <= 1
    x, _ = train_transform(crop=8, color_jitter=0.99)(image, np.zeros((8, 8)), random.Random(2))
    assert x.isfinite().all()


def test_no_jitter_keeps_the_old_pipeline_and_its_draws():
    """color_jitter=0 adds no step: the outputs and the rng's state after them are those of
    the pipeline without it. With jitter the image changes and the label does not."""
    image, label = scene(3, 30, 40)
    old = Compose([Normalize(), RandomScale(0.5, 2.0), RandomCrop(24), RandomHorizontalFlip()])
    new = train_transform(scale=(0.5, 2.0), crop=24, flip=True, color_jitter=0.0)
    jittered = train_transform(scale=(0.5, 2.0), crop=24, flip=True, color_jitter=0.3)
    for seed in range(5):
        r_old, r_new = random.Random(seed), random.Random(seed)
        a, b = old(image, label, r_old), new(image, label, r_new)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert r_old.getstate() == r_new.getstate()
    x, y = jittered(image, label, random.Random(0))
    rng = random.Random(0)
    reference = old(*ColorJitter(0.3)(image, label, rng), rng)
    assert torch.equal(x, reference[0]) and torch.equal(y, reference[1])
    assert not torch.equal(x, old(image, label, random.Random(0))[0])


def test_color_jitter_takes_a_read_only_image_quietly_and_leaves_it():
    """A decoded image can be a read-only view (np.asarray of a PIL image): no warning,
    and the caller's pixels are untouched."""
    image, label = scene(4, 9, 11)
    image.flags.writeable = False
    before = image.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = ColorJitter(0.3)(image, label, random.Random(1))
    assert np.array_equal(image, before) and not np.array_equal(out, image)
