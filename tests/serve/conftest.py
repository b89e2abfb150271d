import io
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from fcnseg.serve.app import create_app
from fcnseg.serve.config import Limits, ServeOptions
from tests.conftest import save_tiny_checkpoint

MODES = {
    "gray.png": (21, 33),
    "rgba.png": (17, 40),
    "palette.png": (30, 11),
    "palette_alpha.png": (19, 23),
    "deep.png": (9, 14),
    "bits.png": (12, 29),
    "photo.jpg": (26, 31),
    "phone.jpg": (36, 20),  # stored 20 high x 36 wide, EXIF: rotate to 36 high x 20 wide
    "scan.tif": (15, 27),
}
"""Image files of every kind a user sends -> the (height, width) of their label map."""


@pytest.fixture(scope="package")
def checkpoint(tmp_path_factory):
    """A tiny FCN-8s (synthetic classes) with random score layers, so that its labels
    vary from pixel to pixel, saved as ``fcnseg train`` saves checkpoints."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.pt", 7)


def options(checkpoint, **limits) -> ServeOptions:
    return ServeOptions(str(checkpoint), "torch", "fp32", "cpu", Limits(**limits))


@contextmanager
def serving(checkpoint, segmenter=None, **limits):
    """A TestClient of an app for the tiny checkpoint, started (its lifespan run)."""
    with TestClient(create_app(options(checkpoint, **limits), segmenter)) as client:
        yield client


@contextmanager
def live_server(app, **config):
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread: its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


@pytest.fixture(scope="package")
def client(checkpoint):
    with serving(checkpoint, max_pixels=1_000_000, max_body_bytes=200_000) as client:
        yield client


def write_modes(folder) -> None:
    """One image per entry of :data:`MODES` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def noise(name, *channels, high=256, dtype=np.uint8):
        return rng.integers(0, high, (*MODES[name], *channels), dtype=dtype)

    Image.fromarray(noise("gray.png")).save(folder / "gray.png")
    Image.fromarray(noise("rgba.png", 4)).save(folder / "rgba.png")
    Image.fromarray(noise("palette.png", 3)).convert("P").save(folder / "palette.png")
    pal = Image.fromarray(noise("palette_alpha.png", 3)).convert("P")
    pal.save(folder / "palette_alpha.png", transparency=3)
    Image.fromarray(noise("deep.png", high=65536, dtype=np.uint16)).save(folder / "deep.png")
    Image.fromarray(noise("bits.png") > 127).save(folder / "bits.png")
    Image.fromarray(noise("photo.jpg", 3)).save(folder / "photo.jpg")
    Image.fromarray(noise("scan.tif", 3)).save(folder / "scan.tif")
    height, width = MODES["phone.jpg"]
    phone = Image.fromarray(rng.integers(0, 256, (width, height, 3), dtype=np.uint8))
    exif = phone.getexif()
    exif[0x0112] = 8  # orientation: rotate 90 degrees to show it upright
    phone.save(folder / "phone.jpg", exif=exif)


@pytest.fixture(scope="package")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_modes(folder)
    return folder


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def label_of(png: bytes) -> np.ndarray:
    """The (H, W) indices of a palette PNG."""
    img = Image.open(io.BytesIO(png))
    assert img.mode == "P"
    return np.asarray(img)
