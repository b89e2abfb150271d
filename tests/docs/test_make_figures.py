"""docs/make_figures.py: its numbers hold, and the committed guide is what it writes."""

import importlib.util
import json
import pathlib
import re
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
# A number as the guide writes it: 5, 0.71875, 8.9e-16.
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]\d+)?")


@pytest.fixture(scope="module")
def make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def rounding_level(token: str) -> bool:
    return "e" in token and float(token) < 1e-10


def assert_same_guide(fresh: str, committed: str) -> None:
    """Equal text and numbers; differences at float64 rounding only need to stay there."""
    assert NUMBER.split(fresh) == NUMBER.split(committed), (
        "docs/fcn-in-figures.md is stale: run python docs/make_figures.py"
    )
    for new, old in zip(NUMBER.findall(fresh), NUMBER.findall(committed), strict=True):
        assert new == old or (rounding_level(new) and rounding_level(old)), (new, old)


def test_script_numbers_and_the_committed_guide(make_figures, tmp_path, capsys):
    make_figures.main(["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    # The convolutionalized net equals the classifier's head on every window, in float64.
    head_diff = re.search(r"^conv_head_diff: (\S+)$", printed, re.M)
    assert float(head_diff.group(1)) < 1e-10
    for name in ("mat_conv_diff", "mat_transposed_diff", "mat_grad_diff", "mat_up_diff"):
        assert float(re.search(rf"^{name}: (\S+)$", printed, re.M).group(1)) < 1e-10
    assert re.search(r"^geo_crop4: 5$", printed, re.M)
    assert re.search(r"^geo_crop3: 9$", printed, re.M)
    assert re.search(r"^geo_crop8: 31$", printed, re.M)
    assert re.search(r"^geo_crop32: 19$", printed, re.M)

    fresh = (tmp_path / "fcn-in-figures.md").read_text()
    # Every number the guide fills in is one the script printed.
    template_numbers = set(NUMBER.findall(make_figures.TEMPLATE))
    for token in set(NUMBER.findall(fresh)) - template_numbers:
        assert token in printed, token
    assert_same_guide(fresh, (DOCS / "fcn-in-figures.md").read_text())

    for name in make_figures.FIGURES:
        png = tmp_path / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 150_000, name
        assert (DOCS / "figures" / name).exists(), f"docs/figures/{name} not committed"


def test_guide_comparison_sees_a_changed_number():
    guide = "crop by 5 (5.71875 − 0.71875); difference 8.9e-16"
    assert_same_guide(guide, guide.replace("8.9e-16", "2.2e-16"))
    with pytest.raises(AssertionError):
        assert_same_guide(guide, guide.replace("5.71875", "5.7"))
    with pytest.raises(AssertionError):
        assert_same_guide(guide, guide.replace("8.9e-16", "8.9e-06"))


def test_skip_section_embeds_the_results_when_there(make_figures, tmp_path):
    section = make_figures.skip_comparison(tmp_path).numbers["skip_section"]
    assert "bash bench/skip_nets.sh" in section and "|" not in section
    per_class = {"road": 0.9, "sky": 0.8}
    models = {
        name: {"mean_iu": 0.5 + k / 100, "pixel_accuracy": 0.8, "per_class_iu": per_class}
        for k, name in enumerate(["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
    }
    (tmp_path / "skip_nets.json").write_text(json.dumps({"models": models}))
    (tmp_path / "skip_nets.png").write_bytes(b"")
    section = make_figures.skip_comparison(tmp_path).numbers["skip_section"]
    assert "](../bench/results/skip_nets.png)" in section
    assert "| % | FCN-32s | FCN-16s | FCN-8s | FCN-8s at-once |" in section
    assert "| **mean IU** | 50.0 | 51.0 | 52.0 | 53.0 |" in section
    assert "| IU sky | 80.0 | 80.0 | 80.0 | 80.0 |" in section
