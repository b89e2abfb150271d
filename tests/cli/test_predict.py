"""``fcnseg predict``: every output planned and checked before the first is written;
predictions equal an independent ``argmax model(normalize(image))``."""

import hashlib
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.images import read_label
from fcnseg.deploy.inference import Segmenter
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from tests.cli.replay import folder_dataset
from tests.conftest import EMULATED_BF16_LINE, one_line_error, randomize_scores
from tests.data.test_images import write_blank_png

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)
OTHER = {"imagenet": "caffe", "caffe": "imagenet"}


def photos(folder, sizes: dict[str, tuple[int, int]], seed: int = 0) -> None:
    """Random RGB images ``name -> (height, width)`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def predict(checkpoint, *args: str) -> int:
    return main(["predict", str(checkpoint), *args, "--device", "cpu", "--precision", "fp32"])


def test_out_into_the_inputs_is_refused_and_nothing_changes(checkpoint, tmp_path, capsys):
    photos(tmp_path / "photos", {"a.png": (20, 24), "b.png": (18, 30), "c.jpg": (16, 16)})
    before = digest(tmp_path / "photos")
    for extra in ([], ["--overwrite"]):
        assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(tmp_path / "photos"),
                       *extra) == 2  # fmt: skip
        err = one_line_error(capsys)
        assert "--out" in err and "photos" in err and "apart from the inputs" in err
        assert digest(tmp_path / "photos") == before


def test_a_link_to_an_input_is_never_overwritten(checkpoint, tmp_path, capsys):
    photos(tmp_path / "photos", {"a.png": (20, 24)})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").symlink_to(tmp_path / "photos" / "a.png")
    before = digest(tmp_path / "photos")
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
                   "--overwrite") == 2  # fmt: skip
    assert "is an input" in one_line_error(capsys)
    assert digest(tmp_path / "photos") == before


def test_same_names_give_one_output_each(checkpoint, tmp_path, capsys):
    sizes = {"x/a.jpg": (20, 24), "x/a.png": (17, 31), "y/a.png": (26, 19), "y/b.png": (21, 22)}
    for name, size in sizes.items():
        photos(tmp_path / name.split("/")[0], {name.split("/")[1]: size}, seed=size[0])
    out = tmp_path / "out"
    # y/b.png is named twice (folder and glob) and predicted once
    assert predict(checkpoint, str(tmp_path / "x"), str(tmp_path / "y"), str(tmp_path / "y/b*"),
                   "--out", str(out)) == 0  # fmt: skip
    assert f"predictions for 4 images written to {out}/: 8 files" in capsys.readouterr().out
    expected = {"x/a.jpg.png": "x/a.jpg", "x/a.png.png": "x/a.png", "y/a.png": "y/a.png",
                "y/b.png": "y/b.png"}  # fmt: skip
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([*expected, *(k[:-4] + "_overlay.png" for k in expected)])
    for output, source in expected.items():  # each output from its own input: by its size
        assert read_label(out / output).shape == sizes[source]


def test_existing_outputs_need_overwrite(checkpoint, tmp_path, capsys):
    photos(tmp_path / "photos", {"a.png": (20, 24), "b.png": (18, 30)})
    out = tmp_path / "out"
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out), "--no-overlay") == 0
    assert f"predictions for 2 images written to {out}/: 2 files" in capsys.readouterr().out
    (out / "b.png").write_bytes(b"the user's own file")
    before = digest(out)
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out)) == 2
    err = one_line_error(capsys)
    assert "exists" in err and "--overwrite" in err
    assert digest(out) == before  # a.png was not written before b.png was refused
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out), "--overwrite") == 0
    assert f"predictions for 2 images written to {out}/: 4 files" in capsys.readouterr().out
    assert read_label(out / "b.png").shape == (18, 30)


def test_huge_image_refused_before_anything_is_written(checkpoint, tmp_path, capsys):
    photos(tmp_path / "photos", {"a.png": (20, 24)})
    write_blank_png(tmp_path / "photos" / "z_bomb.png", 20000, 20000)  # a few KB on disk
    out = tmp_path / "out"
    assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out),
                   "--max-pixels", "100000000") == 2  # fmt: skip
    err = one_line_error(capsys)
    assert "z_bomb.png" in err and "20000x20000" in err and "--max-pixels" in err
    assert not out.exists()
    assert predict(checkpoint, str(tmp_path / "photos" / "a.png"), "--out", str(out),
                   "--max-pixels", "479") == 2  # fmt: skip
    assert "a.png: 24x20 pixels" in one_line_error(capsys)
    assert predict(checkpoint, str(tmp_path / "photos" / "a.png"), "--out", str(out),
                   "--max-pixels", "480") == 0  # fmt: skip


def test_bad_predict_flags_are_one_line(checkpoint, tmp_path, capsys):
    photos(tmp_path / "photos", {"a.png": (20, 24)})
    args = [str(tmp_path / "photos"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit):  # argparse: a usage line and exit 2
        main(["predict", str(checkpoint), *args, "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    assert main(["predict", str(checkpoint), *args, "--device", "gpu"]) == 2
    assert "--device gpu: unknown device" in one_line_error(capsys)
    assert main(["predict", str(checkpoint), *args, "--precision", "fp16", "--device", "cpu"]) == 2
    assert "--precision fp16" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def normalize_by_hand(image: np.ndarray, mode: str) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W), as the weights of each kind expect it."""
    x = image.astype(np.float64)
    if mode == "imagenet":
        x = (x / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    else:  # caffe: BGR order, 0-255, minus the BGR mean
        x = x[..., ::-1] - np.array(CAFFE_BGR_MEAN)
    return torch.from_numpy(x.transpose(2, 0, 1).copy()).float()[None]


@pytest.mark.parametrize("mode", ["imagenet", "caffe"])
def test_predict_is_argmax_of_model_of_normalized_image(checkpoint, tmp_path, capsys, mode):
    ckpt = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(ckpt)
    randomize_scores(model, std=0.1)  # the trained scores are near zero: one class everywhere
    ckpt.update(model=model.state_dict(), normalization=mode)
    torch.save(ckpt, tmp_path / "random.pt")
    photos(tmp_path / "photos", {"p.png": (37, 53)}, seed=3)
    image = np.asarray(Image.open(tmp_path / "photos" / "p.png"))

    def labels(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model.eval()(x)[0].argmax(0).numpy()

    expected = labels(normalize_by_hand(image, mode))
    # plausible mistakes (the other normalisation, BGR for RGB) must not pass for it
    mistakes = [normalize_by_hand(image, OTHER[mode]), normalize_by_hand(image[..., ::-1], mode)]
    assert len(np.unique(expected)) > 1
    assert all((labels(wrong) == expected).mean() < 0.99 for wrong in mistakes)
    seg = Segmenter.from_checkpoint(tmp_path / "random.pt", precision="fp32", device="cpu")
    assert (seg.predict(tmp_path / "photos" / "p.png")[0] == expected).mean() > 0.999
    out = tmp_path / "out"
    assert predict(tmp_path / "random.pt", str(tmp_path / "photos"), "--out", str(out)) == 0
    assert (read_label(out / "p.png") == expected).mean() > 0.999


def test_dataset_predictions_never_land_among_its_files(checkpoint, tmp_path, capsys):
    root = folder_dataset(tmp_path / "data", 4)
    before = digest(root)
    base = ["--dataset", "folder", "--data-root", str(root), "--split", "all",
            "--allow-class-mismatch"]  # fmt: skip
    for folder in ("images", "masks"):
        assert predict(checkpoint, *base, "--out", str(root / folder), "--overwrite") == 2
        assert "apart from the inputs" in one_line_error(capsys)
    assert digest(root) == before
    assert predict(checkpoint, *base, "--out", str(tmp_path / "out"), "--no-overlay") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{i:03d}.png" for i in range(4)
    ]


def test_dataset_images_obey_max_pixels(checkpoint, tmp_path, capsys):
    root = folder_dataset(tmp_path / "data", 2)  # 24x20 images
    base = ["--dataset", "folder", "--data-root", str(root), "--split", "all",
            "--allow-class-mismatch", "--no-overlay"]  # fmt: skip
    assert predict(checkpoint, *base, "--out", str(tmp_path / "out"), "--max-pixels", "479") == 2
    err = one_line_error(capsys)
    assert "images/000.png: 24x20 pixels" in err and "raise it with --max-pixels" in err
    assert predict(checkpoint, *base, "--out", str(tmp_path / "ok"), "--max-pixels", "480") == 0
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["000.png", "001.png"]


def test_out_that_is_a_file_is_named_so(checkpoint, tmp_path, capsys):
    photos(tmp_path / "photos", {"a.png": (20, 24)})
    (tmp_path / "afile").write_text("the user's notes")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert predict(checkpoint, str(tmp_path / "photos"), "--out", str(out)) == 2
        assert one_line_error(capsys) == (
            f"fcnseg: error: --out: {tmp_path / 'afile'} is a file, not a folder; give --out a "
            "folder (it is created if missing)"
        )
    assert (tmp_path / "afile").read_text() == "the user's notes"


@pytest.mark.parametrize(("flags", "warns"), [("avx2", True), ("avx2 avx512_bf16", False)])
def test_bf16_on_a_cpu_without_it_is_warned_of_in_one_line(checkpoint, tmp_path, cpu_with,
                                                          capsys, flags, warns):  # fmt: skip
    cpu_with(flags)
    photos(tmp_path / "photos", {"a.png": (20, 24)})
    assert main(["predict", str(checkpoint), str(tmp_path / "photos"), "--out",
                 str(tmp_path / "out"), "--backend", "torch", "--precision", "bf16",
                 "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr()
    warned = [line for line in out.err.splitlines() if line.startswith("warning: ")]
    assert warned == [EMULATED_BF16_LINE] * warns
    assert "running torch bf16" in out.out and (tmp_path / "out" / "a.png").is_file()


def test_a_warning_made_an_error_is_one_error_line(checkpoint, tmp_path, cpu_with, capsys):
    """``python -W error`` / ``PYTHONWARNINGS=error`` raise our warnings: one line, exit 2."""
    cpu_with("avx2")
    photos(tmp_path / "photos", {"a.png": (20, 24)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", str(checkpoint), str(tmp_path / "photos"), "--out",
                     str(tmp_path / "out"), "--backend", "torch", "--precision", "bf16",
                     "--device", "cpu"]) == 2  # fmt: skip
    assert one_line_error(capsys) == EMULATED_BF16_LINE.replace("warning:", "fcnseg: error:", 1)
    assert not (tmp_path / "out" / "a.png").exists()
