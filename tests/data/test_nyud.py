"""NYUDv2 in the reference's layout (PNG images, 16-bit depth, .mat labels) on a tiny tree."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

import fcnseg
from fcnseg.data.check import check_pairs
from fcnseg.data.info import DataError
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import eval_transform

SPLITS = {"train": ["5003", "5004"], "val": ["5012"], "test": ["1"]}
SHAPE = (12, 10)


def rgb(seed):
    return np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)


def depth(seed):
    return np.random.default_rng(seed).integers(400, 9000, SHAPE, dtype=np.uint16)


def segmentation(seed):
    """0 void, 1-40 the classes, as the .mat files hold them."""
    return np.random.default_rng(seed).integers(0, 41, SHAPE, dtype=np.uint8)


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyud")
    for folder in ("data/images", "data/hha", "data/depth", "segmentation"):
        (root / folder).mkdir(parents=True)
    for split, names in SPLITS.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            n = int(name)
            Image.fromarray(rgb(n)).save(root / "data" / "images" / f"img_{name}.png")
            Image.fromarray(rgb(n + 1)).save(root / "data" / "hha" / f"img_{name}.png")
            Image.fromarray(depth(n)).save(root / "data" / "depth" / f"img_{name}.png")  # I;16
            savemat(root / "segmentation" / f"img_{name}.mat", {"segmentation": segmentation(n)})
    return root


def test_colour_and_labels(nyud):
    data = build_dataset("nyud", nyud, "train")
    assert len(data) == 2 and data.info.num_classes == 40
    image, label = data[0]
    np.testing.assert_array_equal(image, rgb(5003))
    raw = segmentation(5003).astype(np.int64)
    np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw - 1))  # 0 void, 1-40 -> 0-39
    assert data.info.classes[0] == "wall" and data.info.classes[39] == "otherprop"


@pytest.mark.parametrize(
    "name,channels,dtype",
    [("nyud-hha", 3, np.uint8), ("nyud-color-d", 4, np.uint16), ("nyud-color-hha", 6, np.uint8)],
)
def test_second_inputs_ride_along_the_channels(nyud, name, channels, dtype):
    image, _ = build_dataset(name, nyud, "val")[0]
    assert image.shape == (*SHAPE, channels) and image.dtype == dtype
    if name == "nyud-hha":
        np.testing.assert_array_equal(image, rgb(5013))
    else:
        np.testing.assert_array_equal(image[..., :3], rgb(5012))
        extra = depth(5012)[..., None] if channels == 4 else rgb(5013)
        np.testing.assert_array_equal(image[..., 3:], extra)


def test_joined_splits_and_checks(nyud):
    data = build_dataset("nyud-color-hha", nyud, "train+val")
    assert data.names == ["img_5003", "img_5004", "img_5012"]
    check_pairs(data, progress=False)  # every file, the HHA images too


def test_bad_files_are_named(nyud, tmp_path):
    with pytest.raises(DataError, match="trainval.txt: split list not found"):
        build_dataset("nyud", nyud, "trainval")
    root = tmp_path / "nyud"
    for folder in ("data/images", "data/hha", "segmentation"):
        (root / folder).mkdir(parents=True)
    (root / "test.txt").write_text("7\n")
    Image.fromarray(rgb(7)).save(root / "data/images/img_7.png")
    Image.fromarray(rgb(7)[:5]).save(root / "data/hha/img_7.png")  # another size
    bad = segmentation(7)
    bad[0, 0] = 41
    savemat(root / "segmentation/img_7.mat", {"segmentation": bad})
    with pytest.raises(DataError, match=r"img_7.mat: label values \[41\] are neither classes"):
        build_dataset("nyud", root, "test")[0]
    savemat(root / "segmentation/img_7.mat", {"labels": segmentation(7)})
    with pytest.raises(DataError, match="img_7.mat: holds no variable 'segmentation'"):
        build_dataset("nyud", root, "test")[0]
    savemat(root / "segmentation/img_7.mat", {"segmentation": segmentation(7)})
    with pytest.raises(DataError, match=r"hha/img_7.png: 10x5 but its colour image is 10x12"):
        build_dataset("nyud-color-hha", root, "test").load_raw(0)
    with pytest.raises(DataError, match=r"hha/img_7.png: its size differs from .*img_7.png's"):
        check_pairs(build_dataset("nyud-color-hha", root, "test"), progress=False)
    with pytest.raises(DataError, match=r"depth/img_7.png: no such file"):
        build_dataset("nyud-color-d", root, "test").load_raw(0)


@pytest.mark.parametrize("name,model", [("nyud-color-d", "fcn32s-color-d"),
                                        ("nyud-color-hha", "fcn32s-color-hha")])  # fmt: skip
def test_feeds_its_net(nyud, name, model):
    data = build_dataset(name, nyud, "test", eval_transform("nyud"))
    image, label = data[0]
    net = fcnseg.build_model(model, 40, width=0.0625).eval()
    assert image.shape == (net.in_channels, *SHAPE) and label.shape == SHAPE
    with torch.inference_mode():
        assert net(image[None]).shape == (1, 40, *SHAPE)


def test_its_recipe_trains(nyud, tmp_path):
    # The RGB-D recipe end to end on the tree (narrow, two updates, no download).
    from fcnseg.train.engine import train
    from fcnseg.train.recipes import get_recipe

    cfg = get_recipe("nyud-fcn32s-color-d").replace(
        data_root=str(nyud), backbone_weights=None, width=0.0625, iterations=2, eval_every=2
    )
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["trained"] == 2 and len(metrics["per_class_iu"]) == 40


def test_colour_hha_recipe_starts_each_stream_from_its_net(nyud, tmp_path, monkeypatch, capsys):
    # The reference's order: colour and HHA FCN-32s, then the late-fusion net from both.
    from fcnseg.cli import main
    from fcnseg.train.checkpoint import load_checkpoint
    from fcnseg.train.engine import make_model, train
    from fcnseg.train.recipes import get_recipe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tiny = {"data_root": str(nyud), "backbone_weights": None, "width": 0.0625,
            "iterations": 1, "eval_every": 1, "lr": 1e-4}  # fmt: skip
    runs = {}
    for stream in ("color", "hha"):
        runs[stream] = tmp_path / stream
        train(get_recipe(f"nyud-fcn32s-{stream}").replace(**tiny), runs[stream], progress=False)
    init = f"color={runs['color'] / 'best.pt'},hha={runs['hha'] / 'best.pt'}"
    cfg = get_recipe("nyud-fcn32s-color-hha").replace(**tiny, init_from=init)
    model = make_model(cfg, 40)
    for stream, run in runs.items():
        trained = load_checkpoint(run / "best.pt")["model"]
        own = getattr(model, stream).state_dict()
        assert all(torch.equal(own[k], v) for k, v in trained.items()), stream
    flags = ["--data-root", str(nyud), "--width", "0.0625", "--iterations", "1", "--quiet"]
    out = tmp_path / "color-hha"
    assert main(["train", "--recipe", "nyud-fcn32s-color-hha", "--init-from", init,
                 "--out", str(out), *flags]) == 0  # fmt: skip
    assert load_checkpoint(out / "best.pt")["model_config"]["name"] == "fcn32s-color-hha"
    capsys.readouterr()
    bad = f"color={runs['color'] / 'best.pt'}"
    assert main(["train", "--recipe", "nyud-fcn32s-color-hha", "--init-from", bad,
                 "--out", str(tmp_path / "bad"), *flags]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err == (
        f"fcnseg: error: init_from (--init-from) {bad!r}: give each stream of fcn32s-color-hha "
        "one checkpoint, as color=PATH,hha=PATH"
    )
    assert not (tmp_path / "bad").exists()
