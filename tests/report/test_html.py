"""``fcnseg report``: the page's numbers against a confusion matrix computed here another
way (the Segmenter on the raw images), its best and worst images in order, and the page
opened offline in headless Chromium."""

import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.deploy.inference import Segmenter
from fcnseg.errors import ConfigError
from fcnseg.report.html import check_report_path, is_report
from fcnseg.train.config import TrainConfig, build_val_set
from fcnseg.train.metrics import ConfusionMatrix
from tests.conftest import one_line_error

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


class Page(HTMLParser):
    """What the tests read from a report: the metric cells (``(class or None, key) ->
    text``) and the example figures' data attributes, in page order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cells: dict[tuple[int | None, str], str] = {}
        self.examples: list[dict] = []
        self._row: int | None = None
        self._cell: tuple[int | None, str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self._row = int(attrs["data-class"]) if "data-class" in attrs else None
        elif tag == "td" and "data-metric" in attrs:
            self._cell = (self._row, attrs["data-metric"])
        elif tag == "figure" and "data-rank" in attrs:
            self.examples.append(attrs)

    def handle_data(self, data):
        if self._cell is not None:
            self.cells[self._cell] = data
            self._cell = None


@pytest.fixture(scope="module")
def reference(run):
    """best.pt on the run's validation images, by :class:`Segmenter` (raw images,
    normalised by it) and a :class:`ConfusionMatrix` per image: (total, scores)."""
    cfg = TrainConfig.from_dict(json.loads((run.path / "config.json").read_text()))
    dataset = build_val_set(cfg)  # no transform: raw images and labels
    seg = Segmenter.from_checkpoint(
        run.path / "best.pt", device="cpu", precision="fp32", channels_last=False
    )  # the layout the report evaluates in
    n = dataset.info.num_classes
    total, scores = ConfusionMatrix(n), []
    for i in range(len(dataset)):
        image, label = dataset.load(i)
        one = ConfusionMatrix(n)
        one.update(seg.predict(image)[0], label)
        total.mat += one.mat
        scores.append(one.compute()["mean_iu"])
    return total, scores


def test_train_prints_the_command_that_makes_the_report(run):
    assert f"report of the run: fcnseg report {run.path}\n" in run.printed


def test_the_eval_table_is_the_confusion_matrix_of_the_same_data(report, reference):
    page = Page(report.read_text())
    expected = reference[0].compute()
    shown = {key: float(page.cells[(None, key)]) for key in ("pixel_acc", "mean_acc",
                                                             "mean_iu", "fw_iu")}  # fmt: skip
    # Two decimals of a percent; a pixel's argmax may differ in the last float bit.
    assert shown == {k: pytest.approx(100 * expected[k], abs=0.0051) for k in shown}
    for i, (iu, acc) in enumerate(zip(expected["per_class_iu"], expected["per_class_acc"],
                                      strict=True)):  # fmt: skip
        for key, value in (("iu", iu), ("acc", acc)):
            text = page.cells[(i, key)]
            if np.isnan(value):
                assert text == "n/a"
            else:
                assert float(text) == pytest.approx(100 * value, abs=0.0051), (i, key)


def test_best_and_worst_images_are_ordered_by_their_own_mean_iu(report, reference):
    scores = np.array(reference[1])
    order = [int(i) for i in np.argsort(-scores, kind="stable")]  # NaN-free here
    examples = Page(report.read_text()).examples
    best = [e for e in examples if e["data-rank"] == "best"]
    worst = [e for e in examples if e["data-rank"] == "worst"]
    assert [int(e["data-index"]) for e in best] == order[:3]
    assert [int(e["data-index"]) for e in worst] == order[::-1][:3]
    for e in examples:
        assert float(e["data-mean-iu"]) == pytest.approx(scores[int(e["data-index"])], abs=1e-9)
    assert scores[order[0]] > scores[order[-1]]


def test_the_page_refers_to_nothing_outside_itself(report):
    text = report.read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text)
    assert len(links) >= 10 and all(link.startswith(("data:image/png;base64,", "#"))
                                    for link in links)  # fmt: skip
    assert "url(" not in text and "@import" not in text and "<script" not in text


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_page_opens_offline_in_chromium(report, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1200, "height": 900},
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "all => all.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith("data:") for url in requests[1:]), requests  # nothing fetched
    assert len(images) == 3 + 1 + 6  # curves (2), class bars, confusion, 3 best + 3 worst
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # figures, not a blank page


def test_a_file_that_is_not_a_report_is_kept(run, report, tmp_path, capsys):
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    assert main(["report", str(run.path), "-o", str(notes)]) == 2
    assert "notes.html: exists and is not an fcnseg report" in one_line_error(capsys)
    assert notes.read_text() == "<p>my notes</p>"
    assert main(["report", str(run.path), "-o", str(tmp_path)]) == 2
    assert "is a folder" in one_line_error(capsys)
    check_report_path(notes, overwrite=True)  # --overwrite: replaced
    assert is_report(report) and not is_report(notes)
    copy = tmp_path / "old.html"
    shutil.copy(report, copy)
    check_report_path(copy, overwrite=False)  # an earlier report: replaced
    with pytest.raises(ConfigError):
        check_report_path(notes, overwrite=False)


def test_a_missing_or_empty_run_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "nope: no such run folder" in one_line_error(capsys)
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing written
