import errno
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from fcnseg.data import images
from fcnseg.data.images import open_image, read_image, read_label
from fcnseg.data.info import DataError
from fcnseg.errors import ConfigError


def write_blank_png(path, width: int, height: int) -> None:
    """A valid 1-bit grayscale PNG of ``width`` x ``height`` zeros, written row by row:
    a few KB on disk and in memory, however many pixels its header declares."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))  # fmt: skip


def test_blank_png_is_what_it_declares(tmp_path):
    write_blank_png(tmp_path / "b.png", 13, 5)
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), np.zeros((5, 13, 3), np.uint8))


@pytest.mark.parametrize("side", [11000, 20000])  # between Pillow's warning and error; past both
def test_huge_image_refused_from_its_header(tmp_path, side):
    path = tmp_path / "bomb.png"
    write_blank_png(path, side, side)
    assert path.stat().st_size < 100_000
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as err:
            read_image(path, max_pixels=100_000_000)
    message = str(err.value)
    assert "bomb.png" in message and f"{side}x{side}" in message and "--max-pixels" in message
    assert "\n" not in message
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert pillow_limit == Image.MAX_IMAGE_PIXELS


def test_limit_above_pillows_own_is_honoured(tmp_path):
    path = tmp_path / "big.png"
    write_blank_png(path, 20000, 20000)  # over twice Pillow's MAX_IMAGE_PIXELS
    with open_image(path, max_pixels=10**9) as img:
        assert img.size == (20000, 20000) and img.mode == "1"


def test_default_limit_applies_to_images_and_labels(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 120)
    np.testing.assert_array_equal(read_image(tmp_path / "small.png"), pixels)
    monkeypatch.setattr(images, "MAX_PIXELS", 119)
    for read in (read_image, read_label):
        with pytest.raises(DataError, match=r"small.png: 12x10 pixels"):
            read(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png", max_pixels=120).shape == (10, 12, 3)


def test_not_an_image_and_missing_file(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(DataError, match="notes.png: not an image file"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(DataError, match="gone.png: no such file"):
        read_image(tmp_path / "gone.png")


def test_unreadable_files_are_named_for_what_they_are(tmp_path, monkeypatch):
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(DataError) as err:
        read_image(tmp_path / "d.jpg")
    assert str(err.value) == f"{tmp_path / 'd.jpg'}: is a folder, not an image file"
    path = tmp_path / "locked.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)

    def denied(fp, *args, **kwargs):  # as open() as a user without read permission
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(fp))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(DataError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: permission denied (the file cannot be read)"


def test_environment_sets_the_default_limit(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)
    monkeypatch.setenv("FCNSEG_MAX_PIXELS", "119")  # read at each call, not at import
    with pytest.raises(DataError) as err:
        read_label(tmp_path / "small.png")
    message = str(err.value)
    assert "12x10 pixels" in message and "FCNSEG_MAX_PIXELS" in message
    assert "--max-pixels" in message.split("FCNSEG_MAX_PIXELS")[1]  # eval and predict's flag
    with pytest.raises(DataError) as err:  # an explicit limit: the flag that set it
        read_label(tmp_path / "small.png", max_pixels=119)
    assert "--max-pixels" in str(err.value) and "FCNSEG_MAX_PIXELS" not in str(err.value)
    monkeypatch.setenv("FCNSEG_MAX_PIXELS", "120")
    assert read_image(tmp_path / "small.png").shape == (10, 12, 3)
    monkeypatch.setenv("FCNSEG_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="FCNSEG_MAX_PIXELS='lots': must be a whole number"):
        read_image(tmp_path / "small.png")
