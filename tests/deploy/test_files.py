from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.data.images import overlay
from fcnseg.data.info import DatasetInfo, voc_colors
from fcnseg.data.legend import legend_entries
from fcnseg.deploy.files import (
    check_plan,
    expand_inputs,
    output_names,
    plan_outputs,
    write_predictions,
)
from fcnseg.errors import ConfigError


def touch(root: Path, *names: str) -> list[Path]:
    paths = [root / name for name in names]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return paths


def test_output_names_keep_relative_paths_and_clashing_suffixes(tmp_path):
    paths = touch(tmp_path, "x/a.jpg", "x/a.png", "x/b.png", "y/a.jpg", "y/deep/c.tif")
    assert [str(n) for n in output_names(paths)] == ["x/a.jpg", "x/a.png", "x/b", "y/a",
                                                     "y/deep/c"]  # fmt: skip
    assert [str(n) for n in output_names(paths[:3])] == ["a.jpg", "a.png", "b"]
    assert [str(n) for n in output_names(paths[4:])] == ["c"]
    assert output_names([]) == []


def test_each_file_is_predicted_once(tmp_path):
    paths = touch(tmp_path, "p/a.png", "p/b.jpg", "p/notes.txt")
    (tmp_path / "link.png").symlink_to(paths[0])
    found = expand_inputs([str(tmp_path / "p"), str(paths[1]), str(tmp_path / "p/*.png"),
                           str(tmp_path / "link.png")])  # fmt: skip
    assert found == paths[:2]


def test_an_overlay_on_another_inputs_label_is_refused(tmp_path):
    paths = touch(tmp_path / "in", "a.png", "a_overlay.png")
    out = tmp_path / "out"
    plan = plan_outputs(paths, output_names(paths), out, overlays=True)
    with pytest.raises(ConfigError, match=r"a.png and .*a_overlay.png would both be written"):
        check_plan(plan, paths, overwrite=True)
    check_plan(plan_outputs(paths, output_names(paths), out, overlays=False), paths, False)


class Stripes:
    """A segmenter that labels column x of any image with class (x // 7) % 4."""

    def predict(self, images):
        return [np.broadcast_to(np.arange(im.shape[1]) // 7 % 4, im.shape[:2]).astype(np.uint8)
                for im in images]  # fmt: skip


def test_overlays_have_a_legend_below_the_unchanged_picture(tmp_path):
    info = DatasetInfo("four", ("a", "b", "c", "d"), voc_colors(5)[1:])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 60, 3), (33, 17, 3))]
    plan = plan_outputs(["x", "y"], ["x", "y"], tmp_path, overlays=True)
    assert write_predictions(Stripes(), plan, [0, 1], images.__getitem__, info, chunk=1) == 4
    for planned, image, label in zip(plan, images, Stripes().predict(images), strict=True):
        plain = overlay(image, label, info.colors)
        written = np.asarray(Image.open(planned.overlay).convert("RGB"))
        assert written.shape[1] == plain.shape[1] and written.shape[0] > plain.shape[0]
        np.testing.assert_array_equal(written[: image.shape[0]], plain)
        entries = legend_entries(label, info.classes, info.colors)
        strip = {tuple(c) for c in written[image.shape[0] :].reshape(-1, 3)}
        assert len(entries) == (4 if image.shape[1] > 21 else 3)
        assert {e.color for e in entries} <= strip  # each class present has its swatch
