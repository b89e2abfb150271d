from pathlib import Path

import pytest

from fcnseg.deploy.files import check_plan, expand_inputs, output_names, plan_outputs
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
