"""The class legend: exactly the classes present, shares that sum to 1, the picture kept."""

import numpy as np
import pytest

from fcnseg.data.images import colorize, overlay
from fcnseg.data.info import voc_colors
from fcnseg.data.legend import LegendEntry, draw_legend, legend_entries, with_legend

CLASSES = ("background", "sky", "road", "car")
COLORS = ((0, 0, 0), (70, 130, 180), (128, 64, 128), (0, 0, 142))


def test_entries_of_a_hand_counted_map():
    # 6 road, 3 background, 2 car, 1 void; no sky
    label = np.array([[2, 2, 2, 0], [2, 2, 2, 0], [3, 3, 0, 255]])
    entries = legend_entries(label, CLASSES, COLORS)
    assert [(e.index, e.name, e.color) for e in entries] == [
        (2, "road", (128, 64, 128)), (0, "background", (0, 0, 0)), (3, "car", (0, 0, 142))
    ]  # fmt: skip
    assert [e.share for e in entries] == [6 / 11, 3 / 11, 2 / 11]
    assert [e.text for e in entries] == ["road 54.5%", "background 27.3%", "car 18.2%"]


@pytest.mark.parametrize("seed", range(4))
def test_entries_are_the_classes_present_with_shares_summing_to_1(seed):
    rng = np.random.default_rng(seed)
    n = 21
    label = rng.choice(rng.permutation(n)[: rng.integers(1, 8)], size=(37, 53)).astype(np.uint8)
    label[rng.random(label.shape) < 0.1] = 255
    names = tuple(f"c{i}" for i in range(n))
    entries = legend_entries(label, names, voc_colors(n))
    values, counts = np.unique(label[label != 255], return_counts=True)
    assert sorted(e.index for e in entries) == values.tolist()
    assert {e.index: e.share for e in entries} == pytest.approx(
        dict(zip(values.tolist(), counts / counts.sum(), strict=True))
    )
    assert sum(e.share for e in entries) == pytest.approx(1.0, abs=1e-12)
    assert [e.share for e in entries] == sorted((e.share for e in entries), reverse=True)
    lut = colorize(np.arange(256, dtype=np.uint8)[None], voc_colors(n))[0]
    assert all(e.color == tuple(lut[e.index]) for e in entries)  # the overlay's colours


def test_a_class_beyond_the_names_and_a_tiny_share():
    label = np.zeros((100, 100), np.uint8)
    label[0, 0] = 6  # a model with more classes than the data names
    entries = legend_entries(label, CLASSES, COLORS)
    assert [e.name for e in entries] == ["background", "class 6"]
    assert entries[1].text == "class 6 <0.1%"
    assert legend_entries(np.full((3, 3), 255), CLASSES, COLORS) == []


def test_overlay_with_legend_keeps_the_picture_pixel_for_pixel():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (90, 120)).astype(np.uint8)
    label[:30] = 1
    plain = overlay(image, label, COLORS)
    picture = with_legend(plain, label, CLASSES, COLORS)
    assert picture.dtype == np.uint8 and picture.shape[1] == plain.shape[1]
    assert picture.shape[0] > plain.shape[0]
    np.testing.assert_array_equal(picture[: plain.shape[0]], plain)
    strip = picture[plain.shape[0] :].reshape(-1, 3)
    swatches = {tuple(c) for c in np.unique(strip, axis=0)}
    assert all(c in swatches for c in COLORS)  # every class present has its swatch
    assert (strip == 255).all(1).mean() > 0.5  # on white


def test_many_classes_wrap_into_rows_within_the_width():
    entries = [LegendEntry(i, f"class number {i}", c, 1 / 12) for i, c in enumerate(voc_colors(12))]
    one = draw_legend(entries[:1], 300)
    many = draw_legend(entries, 300)
    assert one.shape[1] == many.shape[1] == 300
    assert many.shape[0] > 2 * one.shape[0]  # wrapped into several rows
    found = {tuple(c) for c in np.unique(many.reshape(-1, 3), axis=0)}
    assert all(e.color in found for e in entries[1:])  # every swatch drawn (0 is black text)
