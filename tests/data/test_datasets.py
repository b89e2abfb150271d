import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fcnseg.data.camvid import CAMVID_CLASSES
from fcnseg.data.images import read_image
from fcnseg.data.info import DataError, voc_colors
from fcnseg.data.registry import build_dataset
from tests.conftest import CAMVID


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def labels(h, w, n, seed=0):
    return np.random.default_rng(seed).integers(0, n, (h, w), dtype=np.uint8)


def save_palette_png(label, path, colors):
    img = Image.fromarray(label, mode="P")
    img.putpalette([c for col in colors for c in col] + [0] * (768 - 3 * len(colors)))
    img.save(path)


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    names = ["2007_000032", "2007_000039", "2008_000001"]
    for i, n in enumerate(names):
        Image.fromarray(rgb(30 + i, 40, i)).save(root / "JPEGImages" / f"{n}.jpg")
        lab = labels(30 + i, 40, 21, i)
        lab[0, :5] = 255
        save_palette_png(lab, root / "SegmentationClass" / f"{n}.png", voc_colors(21))
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(names) + "\n")
    (root / "ImageSets/Segmentation/train.txt").write_text(names[0] + "\n")
    return root, names


def test_voc_reads_palette_pngs(voc_root):
    root, names = voc_root
    ds = build_dataset("voc", root, "val")
    assert len(ds) == 3 and ds.info.num_classes == 21
    image, label = ds.load(1)
    assert image.shape == (31, 40, 3) and image.dtype == np.uint8
    expected = labels(31, 40, 21, 1).astype(np.int64)
    expected[0, :5] = 255
    np.testing.assert_array_equal(label, expected)
    assert ds.info.colors[15] == (192, 128, 128)  # person, the VOC palette


def test_voc_seg11valid_from_sbd(voc_root, tmp_path):
    root, names = voc_root
    with pytest.raises(DataError, match="seg11valid"):
        build_dataset("voc", root, "seg11valid")
    from fcnseg.data.voc import VOCDataset

    sbd = tmp_path / "sbd"
    sbd.mkdir()
    (sbd / "train.txt").write_text(names[0] + "\n")
    ds = VOCDataset(root, "seg11valid", sbd_root=sbd)
    assert ds.names == names[1:]


def test_sbd_reads_mat(tmp_path):
    root = tmp_path / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "cls").mkdir()
    lab = labels(25, 35, 21, 3)
    Image.fromarray(rgb(25, 35)).save(root / "img" / "2008_000002.jpg")
    gt = {"Segmentation": lab, "Boundaries": np.zeros(1), "CategoriesPresent": 1}
    savemat(root / "cls" / "2008_000002.mat", {"GTcls": gt})
    (root / "train.txt").write_text("2008_000002\n")
    ds = build_dataset("sbd", root, "train")
    image, label = ds.load(0)
    np.testing.assert_array_equal(label, lab)
    (root / "cls" / "2008_000002.mat").write_bytes(b"junk")
    with pytest.raises(DataError, match="2008_000002.mat"):
        ds.load(0)


@pytest.fixture
def folder_root(tmp_path):
    root = tmp_path / "mydata"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("# name R G B\nground 0 0 0\nleaf 0 255 0\nsky 0 0 255\n"
                                      "void 255 255 255\n")  # fmt: skip
    colors = np.array([[0, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    for i in range(12):
        idx = labels(20, 24, 4, i)
        Image.fromarray(rgb(20, 24, i)).save(root / "images" / f"img{i:02d}.png")
        Image.fromarray(colors[idx]).save(root / "masks" / f"img{i:02d}.png")
    return root


def test_folder_with_colour_masks(folder_root):
    train = build_dataset("folder", folder_root, "train")
    val = build_dataset("folder", folder_root, "val")
    assert len(train) == 11 and val.names == ["img09"] and "img09" not in train.names
    assert train.info.classes == ("ground", "leaf", "sky")
    _, label = train.load(0)
    expected = labels(20, 24, 4, 0).astype(np.int64)
    expected[expected == 3] = 255
    np.testing.assert_array_equal(label, expected)
    (folder_root / "val.txt").write_text("img03\n")
    assert build_dataset("folder", folder_root, "val").names == ["img03"]


def test_folder_errors_name_the_file(folder_root, tmp_path):
    Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(folder_root / "masks" / "img00.png")
    ds = build_dataset("folder", folder_root, "all")
    with pytest.raises(DataError, match=r"img00.png: colour \(7, 7, 7\)"):
        ds.load(0)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder_root / "masks" / "img01.png")
    with pytest.raises(DataError, match=r"img01.png: label is 5x5 but its image is 24x20"):
        ds.load(1)
    Image.fromarray(np.full((20, 24), 9, np.uint8)).save(folder_root / "masks" / "img02.png")
    with pytest.raises(DataError, match=r"img02.png: label values \[9\]"):
        ds.load(2)
    data = (folder_root / "images" / "img04.png").read_bytes()
    (folder_root / "images" / "img04.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="img04.png: cannot read image"):
        ds.load(4)
    (folder_root / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt: classes file not found"):
        build_dataset("folder", folder_root, "train")
    empty = tmp_path / "empty"
    for d in ("images", "masks"):
        (empty / d).mkdir(parents=True)
    (empty / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="empty"):
        build_dataset("folder", empty, "all")


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/datasets/camvid")
def test_camvid_shared_copy():
    train, val = build_dataset("camvid", CAMVID, "train"), build_dataset("camvid", CAMVID, "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.info.classes == CAMVID_CLASSES and train.info.num_classes == 11
    image, label = val.load(0)
    assert image.shape == (360, 480, 3) and label.shape == (360, 480)
    raw = np.asarray(Image.open(CAMVID / "valannot" / f"{val.names[0]}.png"))
    np.testing.assert_array_equal(label == 255, raw == 11)  # void 11 -> 255
    assert set(np.unique(label)) <= set(range(11)) | {255}


def test_camvid_layout_fixture(tmp_path):
    for split in ("train", "trainannot"):
        (tmp_path / split).mkdir()
    Image.fromarray(rgb(12, 16)).save(tmp_path / "train" / "a.png")
    Image.fromarray(labels(12, 16, 12)).save(tmp_path / "trainannot" / "a.png")
    Image.fromarray(rgb(12, 16)).save(tmp_path / "train" / "b.png")
    with pytest.raises(DataError, match="images and labels differ: b"):
        build_dataset("camvid", tmp_path, "train")
    (tmp_path / "train" / "b.png").unlink()
    _, label = build_dataset("camvid", tmp_path, "train").load(0)
    raw = labels(12, 16, 12).astype(np.int64)
    np.testing.assert_array_equal(label, np.where(raw == 11, 255, raw))


def test_synthetic_is_deterministic_and_split():
    a, b = build_dataset("synthetic", None, "train"), build_dataset("synthetic", None, "train")
    v = build_dataset("synthetic", None, "val")
    ia, la = a.load(5)
    ib, lb = b.load(5)
    assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    assert not np.array_equal(v.load(5)[0][:10, :10], ia[:10, :10])
    sizes = {a.load(i)[0].shape for i in range(8)}
    assert len(sizes) > 4  # varied sizes and aspect ratios
    counts = np.bincount(np.concatenate([a.load(i)[1].ravel() for i in range(30)]))
    assert len(counts) == 5 and (counts > 0).all()


def test_read_image_modes(tmp_path):
    g = np.arange(0, 65535, 65535 // 120, dtype=np.uint16)[:120].reshape(10, 12)
    Image.fromarray(g).save(tmp_path / "g16.png")
    im = read_image(tmp_path / "g16.png")
    assert im.shape == (10, 12, 3) and im[..., 0].max() > 200
    Image.fromarray(rgb(10, 12)).convert("RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb(10, 12)).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb(10, 12)[..., 0]).save(tmp_path / "l.png")
    for name in ("a.png", "p.png", "l.png"):
        assert read_image(tmp_path / name).shape == (10, 12, 3)
    # EXIF orientation 6: stored 12 wide x 10 high, shown rotated to 10 wide x 12 high
    img = Image.fromarray(rgb(10, 12))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (12, 10, 3)


def test_an_empty_split_says_which_and_why(folder_root, tmp_path):
    for i in range(6, 12):
        (folder_root / "images" / f"img{i:02d}.png").unlink()
    assert len(build_dataset("folder", folder_root, "train")) == 6
    with pytest.raises(DataError) as info:
        build_dataset("folder", folder_root, "val")
    assert str(info.value) == (
        f"{folder_root}: split 'val' is empty: 6 images, every 10th is val when there is "
        "no val.txt or val/ folder; add val.txt or more images"
    )
    (folder_root / "val.txt").write_text("\n")
    with pytest.raises(DataError, match=r"val.txt: the split list names no images"):
        build_dataset("folder", folder_root, "val")
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    with pytest.raises(DataError) as info:
        build_dataset("camvid", tmp_path, "val")
    assert str(info.value) == f"{tmp_path} split 'val': no frames (sequences here: none)"


def test_two_files_of_one_name_are_refused(folder_root):
    Image.fromarray(rgb(20, 24, 99)).save(folder_root / "images" / "img04.jpg")
    with pytest.raises(DataError) as err:
        build_dataset("folder", folder_root, "all")
    images = folder_root / "images"
    assert str(err.value).startswith(f"{images / 'img04.jpg'} and {images / 'img04.png'}: ")
    (images / "img04.jpg").unlink()
    (images / "img12.png").mkdir()  # a folder is no image: not listed, so not missing a mask
    assert len(build_dataset("folder", folder_root, "all")) == 12


def test_the_builders_pixel_limit_applies_to_images_and_labels(folder_root):
    ds = build_dataset("folder", folder_root, "all")
    ds.max_pixels = 24 * 20 - 1
    with pytest.raises(DataError, match=r"img00.png: 24x20 pixels .* raise it with --max-pixels"):
        ds.load(0)
    with pytest.raises(DataError, match=r"images/img00.png: 24x20 pixels"):
        ds.check(0)
    # the label alone over it (a larger image would be refused first)
    ds.pairs[0] = (folder_root / "images" / "img01.png", folder_root / "masks" / "img00.png")
    ds.max_pixels = 24 * 20
    assert ds.load(0)[0].shape == (20, 24, 3)
    Image.fromarray(np.zeros((30, 24, 3), np.uint8)).save(folder_root / "masks" / "img00.png")
    with pytest.raises(DataError, match=r"masks/img00.png: 24x30 pixels"):
        ds.load(0)
    assert build_dataset("folder", folder_root, "all").max_pixels is None  # one dataset's own


def test_synthetic_takes_no_folder(tmp_path):
    with pytest.raises(DataError, match=r"'synthetic' is drawn, not read from files"):
        build_dataset("synthetic", tmp_path, "val")
