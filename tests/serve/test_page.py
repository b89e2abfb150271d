"""The page in a real browser (Debian's chromium, headless, driven by Playwright):
pick or drop an image, see it with its overlay, change the opacity, read the legend."""

import base64
import shutil

import numpy as np
import pytest
from PIL import Image

from fcnseg.data.synthetic import make_scene
from fcnseg.serve.app import create_app
from tests.serve.conftest import live_server, options

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]  # fmt: skip

DROP = """b64 => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
  return transfer;
}"""
"""A drag-and-drop's payload: the file ``dropped.png`` with the given bytes."""

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no {CHROMIUM}")


@pytest.fixture
def browser_page(tmp_path):
    """A fresh headless chromium page, and the console errors and page errors it logs."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS
        )
        page = context.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page, errors
        finally:
            context.close()


def test_upload_shows_overlay_legend_and_opacity(checkpoint, photos, tmp_path, browser_page):
    from playwright.sync_api import expect

    page, errors = browser_page
    scene, _ = make_scene(0, 0, min_size=240, max_size=240)  # (240, 240, 3)
    Image.fromarray(scene).resize((320, 240)).save(tmp_path / "scene.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with live_server(create_app(options(checkpoint))) as url:
        page.goto(url + "/")
        expect(page.locator("#model")).to_contain_text("fcn8s on synthetic (5 classes)")
        page.set_input_files("#file", str(tmp_path / "scene.png"))
        page.wait_for_selector("#legend li")
        expect(page.locator("#photo")).to_have_js_property("complete", True)
        overlay = page.eval_on_selector(
            "#overlay", "e => [e.naturalWidth, e.naturalHeight, e.src.slice(0, 22)]"
        )
        assert overlay == [320, 240, "data:image/png;base64,"]
        photo = page.eval_on_selector("#photo", "e => [e.naturalWidth, e.naturalHeight]")
        assert photo == [320, 240]
        box = page.locator("#photo").bounding_box()
        assert page.locator("#overlay").bounding_box() == box  # laid exactly over the image
        legend = page.locator("#legend li").all_inner_texts()
        assert len(legend) >= 2, legend  # the random tiny model sees several classes
        names = {"background", "disc", "box", "triangle", "bar"}
        shares = []
        for row in legend:
            name, share = row.split("\n")
            assert name in names and share.endswith(" %")
            shares.append(float(share.removeprefix("< ")[:-2]))
        assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(100, abs=0.3)
        assert page.locator("#status").inner_text() == "scene.png: 320 × 240 pixels"
        page.locator("#opacity").fill("25")
        opacity = page.eval_on_selector("#overlay", "e => getComputedStyle(e).opacity")
        assert float(opacity) == pytest.approx(0.25)
        page.screenshot(path=str(tmp_path / "serve_page.png"), full_page=True)
        page.set_input_files("#file", str(photos / "phone.jpg"))  # EXIF: shown rotated
        expect(page.locator("#status")).to_have_text("phone.jpg: 20 × 36 pixels")
        expect(page.locator("#photo")).to_have_js_property("naturalWidth", 20)
        overlay = page.eval_on_selector("#overlay", "e => [e.naturalWidth, e.naturalHeight]")
        assert overlay == [20, 36]
        assert page.locator("#overlay").bounding_box() == page.locator("#photo").bounding_box()
        dropped = page.evaluate_handle(
            DROP, base64.b64encode((tmp_path / "scene.png").read_bytes()).decode()
        )
        page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
        expect(page.locator("#status")).to_have_text("dropped.png: 320 × 240 pixels")
        assert not errors, errors
        page.set_input_files("#file", str(tmp_path / "notes.txt"))  # the server refuses it
        page.wait_for_selector("#status.error")
        assert "notes.txt: not an image file" in page.locator("#status").inner_text()
    print(f"screenshot: {tmp_path / 'serve_page.png'}")
    screenshot = Image.open(tmp_path / "serve_page.png")
    assert screenshot.width >= 320 and len(np.unique(np.asarray(screenshot))) > 10
