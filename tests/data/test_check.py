import os
import re

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fcnseg.data import check, images
from fcnseg.data.check import check_pairs
from fcnseg.data.dataset import FileDataset, image_size
from fcnseg.data.folder import FolderDataset
from fcnseg.data.info import DataError
from fcnseg.data.registry import build_dataset

COLORS = np.array([[0, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)


def write_folder(root, n=8, h=20, w=24):
    """A folder dataset of ``n`` good pairs with colour masks (3 classes + void colour)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("ground 0 0 0\nleaf 0 255 0\nsky 0 0 255\nvoid 255 255 255\n")
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(root / f"images/{i}.png")
        Image.fromarray(COLORS[rng.integers(0, 4, (h, w))]).save(root / f"masks/{i}.png")
    return root


@pytest.fixture
def good(tmp_path):
    return write_folder(tmp_path / "good")


def spoil(root):
    """Spoil four pairs, one way each; return the messages each must produce."""
    Image.fromarray(COLORS[np.zeros((5, 7), int)]).save(root / "masks/1.png")
    Image.fromarray(np.full((20, 24), 9, np.uint8)).save(root / "masks/3.png")
    colour = COLORS[np.zeros((20, 24), int)]
    colour[4, 6] = (7, 8, 9)
    Image.fromarray(colour).save(root / "masks/5.png")
    data = (root / "images/6.png").read_bytes()
    (root / "images/6.png").write_bytes(data[: len(data) // 2])
    return [
        r"masks/1.png: label is 7x5 but its image is 24x20",
        r"masks/3.png: label values \[9\] are neither classes 0..2 nor void",
        r"masks/5.png: colour \(7, 8, 9\) at x=6, y=4 is not in classes.txt",
        r"images/6.png: cannot read image",
    ]


def test_good_data_passes_and_synthetic_needs_no_files(good, tmp_path):
    check_pairs(FolderDataset(good, "all"), cache_dir=tmp_path / "cache", progress=False)
    check_pairs(build_dataset("synthetic", None, "train"), progress=False)


def test_every_bad_pair_is_reported_at_once(good):
    expected = spoil(good)
    ds = FolderDataset(good, "all")
    with pytest.raises(DataError) as info:
        check_pairs(ds, progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"4 of 8 pairs in {good} split 'all' are bad:"
    assert len(lines) == 5
    for line, pattern in zip(lines[1:], expected, strict=True):
        assert re.search(pattern, line), (pattern, line)
    # each is what loading that pair would have raised (PIL's own words may differ)
    for index, line in zip((1, 3, 5, 6), lines[1:], strict=True):
        with pytest.raises(DataError) as one:
            ds.load(index)
        assert line.strip().split(" (")[0] == str(one.value).split(" (")[0]


def test_the_list_is_capped(good, monkeypatch):
    monkeypatch.setattr(check, "MAX_LISTED", 3)
    for i in range(5):
        Image.fromarray(np.full((20, 24), 9, np.uint8)).save(good / f"masks/{i}.png")
    with pytest.raises(DataError) as info:
        check_pairs(FolderDataset(good, "all"), progress=False)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("5 of 8 pairs") and len(lines) == 1 + 3 + 1
    assert lines[-1] == "  ... and 2 more"


def count_checks(monkeypatch):
    calls = []
    real = FileDataset.check

    def counting(self, index):
        calls.append(self.pairs[index][1].name)
        return real(self, index)

    monkeypatch.setattr(FileDataset, "check", counting)
    return calls


def test_cache_skips_unchanged_files_and_rechecks_changed_ones(good, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = count_checks(monkeypatch)
    ds = FolderDataset(good, "all")
    check_pairs(ds, cache_dir=cache, progress=False)
    assert len(calls) == 8 and len(list(cache.iterdir())) == 1
    calls.clear()
    check_pairs(FolderDataset(good, "all"), cache_dir=cache, progress=False)
    assert calls == []
    # a bad mask written in place: new size and mtime, so it is checked again and reported
    Image.fromarray(np.full((20, 24), 9, np.uint8)).save(good / "masks/2.png")
    with pytest.raises(DataError, match=r"1 of 8 pairs(.|\n)*masks/2.png: label values"):
        check_pairs(ds, cache_dir=cache, progress=False)
    assert calls == ["2.png"]
    calls.clear()
    with pytest.raises(DataError, match="masks/2.png"):  # a bad result is cached too
        check_pairs(ds, cache_dir=cache, progress=False)
    assert calls == []
    # the same size but a new mtime: checked again
    st = os.stat(good / "images/4.png")
    os.utime(good / "images/4.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError):
        check_pairs(ds, cache_dir=cache, progress=False)
    assert calls == ["4.png"]


def test_cache_follows_the_classes(good, tmp_path, monkeypatch):
    """A colour added to classes.txt turns a cached 'unknown colour' into a good pair."""
    cache = tmp_path / "cache"
    colour = COLORS[np.zeros((20, 24), int)]
    colour[0, 0] = (7, 8, 9)
    Image.fromarray(colour).save(good / "masks/0.png")
    with pytest.raises(DataError, match="colour"):
        check_pairs(FolderDataset(good, "all"), cache_dir=cache, progress=False)
    with open(good / "classes.txt", "a") as f:
        f.write("rock 7 8 9\n")
    check_pairs(FolderDataset(good, "all"), cache_dir=cache, progress=False)


def test_a_corrupt_or_unwritable_cache_is_only_slower(good, tmp_path):
    cache = tmp_path / "cache"
    ds = FolderDataset(good, "all")
    check_pairs(ds, cache_dir=cache, progress=False)
    (cache_file,) = cache.iterdir()
    cache_file.write_text("{not json")
    spoil(good)
    with pytest.raises(DataError, match="4 of 8"):
        check_pairs(ds, cache_dir=cache, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="4 of 8"):
        check_pairs(ds, cache_dir=blocker / "cache", progress=False)


def test_images_over_the_pixel_limit_are_reported(good, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 20 * 24 - 1)
    with pytest.raises(DataError, match=r"8 of 8 pairs(.|\n)*images/0.png: 24x20 pixels"):
        check_pairs(FolderDataset(good, "all"), progress=False)


def test_a_raised_limit_is_not_answered_from_the_cache(good, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FCNSEG_MAX_PIXELS", str(20 * 24 - 1))
    with pytest.raises(DataError, match=r"8 of 8 pairs(.|\n)*FCNSEG_MAX_PIXELS"):
        check_pairs(FolderDataset(good, "all"), cache_dir=cache, progress=False)
    monkeypatch.setenv("FCNSEG_MAX_PIXELS", str(20 * 24))
    check_pairs(FolderDataset(good, "all"), cache_dir=cache, progress=False)
    ds = FolderDataset(good, "all")
    ds.max_pixels = 20 * 24 - 1  # a builder's own limit counts as well
    with pytest.raises(DataError, match=r"8 of 8 pairs(.|\n)*--max-pixels"):
        check_pairs(ds, cache_dir=cache, progress=False)


def test_missing_files_are_reported(good, tmp_path):
    (good / "val.txt").write_text("0\n1\n")
    ds = FolderDataset(good, "val")
    (good / "images/1.png").unlink()
    with pytest.raises(DataError, match=r"1 of 2 pairs(.|\n)*images/1.png: no such file"):
        check_pairs(ds, cache_dir=tmp_path / "cache", progress=False)


def test_sbd_labels_are_read_by_the_dataset(tmp_path):
    root = tmp_path / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "cls").mkdir()
    for name, (h, w), top in (("a", (25, 35), 20), ("b", (25, 35), 30), ("c", (20, 35), 0)):
        Image.fromarray(np.zeros((25, 35, 3), np.uint8)).save(root / "img" / f"{name}.jpg")
        seg = np.full((h, w), top, np.uint8)
        savemat(root / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": seg}})
    (root / "train.txt").write_text("a\nb\nc\n")
    with pytest.raises(DataError) as info:
        check_pairs(build_dataset("sbd", root, "train"), progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"2 of 3 pairs in {root / 'train.txt'} are bad:"
    assert "b.mat: label values [30]" in lines[1] and "c.mat: label is 35x20" in lines[2]


def test_image_size_reads_headers_and_verifies(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (10, 12, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # shown rotated: 10 wide, 12 high
    img.save(tmp_path / "rot.jpg", exif=exif)
    img.save(tmp_path / "a.jpg")
    img.save(tmp_path / "a.bmp")
    assert image_size(tmp_path / "rot.jpg") == (12, 10)
    assert image_size(tmp_path / "a.jpg") == image_size(tmp_path / "a.bmp") == (10, 12)
    for name in ("a.jpg", "a.bmp"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError, match=f"{name}: cannot read image"):
            image_size(tmp_path / name)
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(DataError, match="t.png: not an image file"):
        image_size(tmp_path / "t.png")
