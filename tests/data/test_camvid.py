"""CamVid splits by sequence: a held-out drive never reaches training."""

import numpy as np
import pytest
from PIL import Image

from fcnseg.data.camvid import CamVidDataset, parse_split, sequence_of
from fcnseg.data.info import DataError
from fcnseg.data.registry import build_dataset
from tests.conftest import CAMVID

FRAMES = {
    "train": ["0001TP_006690", "0006R0_f00930", "0016E5_00390", "0016E5_00420"],
    "val": ["0016E5_07959", "0016E5_07961"],
}


@pytest.fixture
def camvid(tmp_path):
    """A SegNet-layout CamVid tree with frames of three sequences, 6x8 pixels each."""
    for folder, stems in FRAMES.items():
        (tmp_path / folder).mkdir()
        (tmp_path / f"{folder}annot").mkdir()
        for k, stem in enumerate(stems):
            Image.fromarray(np.full((6, 8, 3), k, np.uint8)).save(tmp_path / folder / f"{stem}.png")
            label = np.full((6, 8), k % 11, np.uint8)
            Image.fromarray(label).save(tmp_path / f"{folder}annot" / f"{stem}.png")
    return tmp_path


def stems(dataset):
    return sorted(dataset.names)


def test_splits_join_folders_and_keep_or_drop_sequences(camvid):
    everything = sorted(FRAMES["train"] + FRAMES["val"])
    assert stems(CamVidDataset(camvid, "train+val")) == everything
    held_out = stems(CamVidDataset(camvid, "train+val:0016E5"))
    rest = stems(CamVidDataset(camvid, "train+val:-0016E5"))
    assert held_out == [s for s in everything if s.startswith("0016E5_")]
    assert rest == ["0001TP_006690", "0006R0_f00930"]
    assert not set(held_out) & set(rest) and sorted(held_out + rest) == everything
    assert stems(CamVidDataset(camvid, "train:0001TP,0006R0")) == rest


def test_a_split_that_selects_nothing_names_the_sequences_there(camvid):
    with pytest.raises(DataError, match=r"no frames \(sequences here: 0016E5\)"):
        CamVidDataset(camvid, "val:0001TP")


@pytest.mark.parametrize("split", ["train+", "+val", "train:", "train:-", "train:0016e5", "a:b:c"])
def test_malformed_splits_are_one_line(camvid, split):
    with pytest.raises(DataError, match="camvid split") as err:
        CamVidDataset(camvid, split)
    assert "\n" not in str(err.value)


def test_parse_split():
    assert parse_split("train+val:-0006R0") == (("train", "val"), frozenset({"0006R0"}), False)
    assert parse_split("val") == (("val",), frozenset(), True)
    assert sequence_of("Seq05VD_f02370") == "Seq05VD"


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/datasets/camvid")
def test_the_shared_copy_held_out_by_sequence():
    train = build_dataset("camvid", CAMVID, "train+val:-0006R0")
    held_out = build_dataset("camvid", CAMVID, "train+val:0006R0")
    assert {sequence_of(s) for s in held_out.names} == {"0006R0"}
    assert "0006R0" not in {sequence_of(s) for s in train.names}
    assert (len(train), len(held_out)) == (367, 101)  # as large as the usual train / val


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/datasets/camvid")
def test_the_heldout_recipe_never_trains_on_its_validation_drive():
    from fcnseg.train.config import build_train_set, build_val_set
    from fcnseg.train.recipes import get_recipe

    cfg = get_recipe("camvid-fcn8s-heldout").replace(data_root=str(CAMVID))
    train, val = build_train_set(cfg, None), build_val_set(cfg, None)
    assert not {sequence_of(s) for s in train.names} & {sequence_of(s) for s in val.names}
    assert not {p for pair in train.pairs for p in pair} & {p for pair in val.pairs for p in pair}


def test_the_trainval_recipe_is_the_heldout_choice_on_every_frame():
    """camvid-fcn8s-trainval is camvid-fcn8s-heldout with the settings the held-out drive
    chose (9,600 iterations, ENet's class weights, label smoothing 0.1, grey-world balance)
    and nothing else changed but the data: so the held-out number estimates it. Its one
    evaluation is at the end, on frames it trained on."""
    from fcnseg.train.recipes import get_recipe

    heldout, trainval = get_recipe("camvid-fcn8s-heldout"), get_recipe("camvid-fcn8s-trainval")
    same_data = trainval.replace(
        train_split=heldout.train_split, val_split=heldout.val_split, eval_every=400
    )
    chosen = heldout.replace(
        iterations=9600,
        class_weighting="enet",
        label_smoothing=0.1,
        normalization="imagenet-greyworld",
    )
    assert same_data == chosen
    assert trainval.eval_every == trainval.iterations


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/datasets/camvid")
def test_the_trainval_recipe_trains_on_every_train_and_val_frame():
    from fcnseg.train.config import build_train_set
    from fcnseg.train.recipes import get_recipe

    cfg = get_recipe("camvid-fcn8s-trainval").replace(data_root=str(CAMVID))
    train = build_train_set(cfg, None)
    everything = {p.stem for folder in ("train", "val") for p in (CAMVID / folder).glob("*.png")}
    assert set(train.names) == everything and len(train) == 468
