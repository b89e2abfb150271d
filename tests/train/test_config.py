import dataclasses
import json
import shlex

import pytest
import torch

import fcnseg.nets.weights as weights
from fcnseg.cli import build_parser
from fcnseg.cli import main as cli_main
from fcnseg.errors import ConfigError
from fcnseg.train.config import (
    TrainConfig,
    deployed_normalization,
    option_name,
    resolve_normalization,
    stream_sources,
)
from fcnseg.train.recipes import RECIPES

# (field, a value it refuses, words the message must hold besides the field and its flag)
BAD = [
    ("model", "fcn4s", "fcn32s, fcn16s, fcn8s"),
    ("model", 8, "non-empty string"),
    ("width", 0.0, "> 0"),
    ("width", -1.0, "> 0"),
    ("width", float("inf"), "finite"),
    ("batch_norm", "yes", "true or false"),
    ("learnable_upsampling", 1, "true or false"),
    ("pad", 0, ">= 1"),
    ("pad", 1.5, "whole number"),
    ("backbone_weights", "", "non-empty"),
    ("init_from", " ", "non-empty"),
    ("dataset", "coco", "synthetic, folder, voc, sbd, camvid"),
    ("data_root", 3, "non-empty string, or none"),
    ("train_split", "", "non-empty"),
    ("val_split", None, "non-empty string; got None"),
    ("val_dataset", "pascal", "synthetic, folder"),
    ("val_root", "", "non-empty"),
    ("normalization", "bgr", "imagenet, caffe"),
    ("val_normalization", "rgb", "imagenet, caffe, nyud"),
    ("crop", 0, ">= 1, or none"),
    ("crop", -8, ">= 1"),
    ("scale", (2.0, 1.0), "0 < LOW <= HIGH"),
    ("scale", (0.0, 1.0), "0 < LOW <= HIGH"),
    ("scale", (1.0,), "two numbers"),
    ("flip", None, "true or false"),
    ("color_jitter", 1.0, "[0, 1)"),
    ("color_jitter", -0.1, "[0, 1)"),
    ("batch_size", 0, ">= 1"),
    ("accumulate", 0, ">= 1"),
    ("workers", -1, ">= 0"),
    ("iterations", 0, ">= 1"),
    ("iterations", -5, ">= 1"),
    ("optimizer", "adam", "sgd, adamw"),
    ("lr", 0.0, "> 0"),
    ("lr", float("nan"), "finite"),
    ("momentum", 1.0, "[0, 1)"),
    ("momentum", -0.1, "[0, 1)"),
    ("weight_decay", -1e-4, ">= 0"),
    ("bias_lr_mult", -2.0, ">= 0"),
    ("schedule", "foo", "fixed, poly"),
    ("poly_power", -0.9, ">= 0"),
    ("warmup", -1, ">= 0"),
    ("normalize_loss", "false", "true or false"),
    ("class_weighting", "medain", "none, median, enet"),
    ("label_smoothing", 1.0, "[0, 1)"),
    ("label_smoothing", -0.01, "[0, 1)"),
    ("ema", 1.0, "[0, 1)"),
    ("ema", -0.5, "[0, 1)"),
    ("aux_weight", -0.4, ">= 0"),
    ("aux_weight", float("inf"), "finite"),
    ("precision", "fp8", "auto, fp32, bf16, fp16"),
    ("channels_last", 0, "true or false"),
    ("compile", "no", "true or false"),
    ("dropout", 1.0, "[0, 1)"),
    ("dropout", -0.5, "[0, 1)"),
    ("eval_every", 0, ">= 1"),
    ("eval_every", -1, ">= 1"),
    ("keep_checkpoints", "yes", "true or false"),
    ("log_every", 0, ">= 1"),
    ("seed", -1, "[0, 2**32)"),
    ("seed", 2**32, "[0, 2**32)"),
    ("device", "gpu", "auto, cpu, cuda"),
]


@pytest.mark.parametrize("field,value,words", BAD)
def test_bad_values_are_refused_with_one_line(field, value, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{field} ({option_name(field)}) must be "), message
    assert words in message and repr(value) in message


def test_every_field_has_a_refused_value():
    assert {f.name for f in dataclasses.fields(TrainConfig)} == {field for field, _, _ in BAD}


@pytest.mark.parametrize(
    "changes",
    [
        {"momentum": 0.0, "dropout": 0.0, "warmup": 0, "workers": 0, "weight_decay": 0.0},
        {"color_jitter": 0.999, "label_smoothing": 0.999},
        {"crop": None, "backbone_weights": None, "normalization": None, "val_dataset": None},
        {"crop": 1, "scale": (0.5, 0.5), "seed": 2**32 - 1, "pad": 1, "device": "cuda:3"},
        {"model": "fcn-alexnet", "pad": 100, "batch_norm": False, "width": 1e-3},
    ],
)
def test_edge_values_are_accepted(changes):
    assert TrainConfig(**changes).to_dict().items() >= changes.items()


@pytest.mark.parametrize("changes", [{"pad": 1}, {"batch_norm": True}])
def test_model_options_the_builder_refuses(changes):
    # AlexNet has no batch-norm variant, and its fc6 kernel (6) is even: pad 100 only.
    with pytest.raises(ConfigError, match=r"^model \(--model\) fcn-alexnet with --pad"):
        TrainConfig(model="fcn-alexnet", **changes)


def test_two_head_nets_train_on_a_label_set_per_head():
    TrainConfig(model="fcn8s-sem-geo", dataset="siftflow", data_root="x")
    with pytest.raises(ConfigError) as e:
        TrainConfig(model="fcn8s-sem-geo", dataset="camvid", data_root="x")
    assert str(e.value) == (
        "model (--model) fcn8s-sem-geo: the net has 2 heads but camvid labels one; "
        "datasets with a label set per head: siftflow"
    )
    with pytest.raises(ConfigError, match=r"^class_weighting \(--class-weighting\) must be none"):
        TrainConfig(
            model="fcn8s-sem-geo", dataset="siftflow", data_root="x", class_weighting="median"
        )


STREAMS = "fcn32s-color-hha"


def test_one_checkpoint_per_stream():
    cfg = TrainConfig(model=STREAMS, init_from="hha=b.pt, color=dir/a.pt")
    assert stream_sources(cfg) == {"color": "dir/a.pt", "hha": "b.pt"}  # in stream order
    # One path, though it holds '=' or ',': the net's own checkpoint, or a coarser FCN's.
    for path in ("runs/lr=1e-3/best.pt", "./color=a.pt", "a,b.pt"):
        assert stream_sources(TrainConfig(model=STREAMS, init_from=path)) is None
        assert stream_sources(TrainConfig(init_from=path)) is None


@pytest.mark.parametrize(
    "model,init_from,words",
    [
        (STREAMS, "color=a.pt", "give each stream of fcn32s-color-hha one checkpoint, as "
                                "color=PATH,hha=PATH"),
        (STREAMS, "colour=a.pt,hha=b.pt", "give each stream"),
        (STREAMS, "color=a.pt,hha=b.pt,hha=c.pt", "give each stream"),
        (STREAMS, "color=a.pt,b.pt", "give each stream"),
        ("fcn32s", "color=a.pt", "fcn32s has one stream; give one checkpoint"),
    ],
)  # fmt: skip
def test_bad_per_stream_sources_are_one_line(model, init_from, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig(model=model, init_from=init_from)
    message = str(e.value)
    assert message.startswith(f"init_from (--init-from) {init_from!r}: ") and words in message
    assert "\n" not in message


def test_per_stream_normalization(tmp_path):
    def sources(color, hha):
        a = save_checkpoint_with(tmp_path / "a.pt", color)
        b = save_checkpoint_with(tmp_path / "b.pt", hha)
        return TrainConfig(model=STREAMS, init_from=f"color={a},hha={b}")

    assert resolve_normalization(sources("imagenet", "imagenet")) == "imagenet"
    # The reference's converted nets: colour minus NYUDv2's BGR mean, HHA minus its own.
    assert resolve_normalization(sources("nyud", "nyud-hha")) == "nyud"
    with pytest.raises(
        ConfigError,
        match=r"normalization imagenet feeds the hha stream as "
        r"imagenet, but its checkpoint was trained with nyud-hha",
    ):
        resolve_normalization(sources("imagenet", "nyud-hha"))
    chosen = sources("imagenet", "nyud-hha").replace(normalization="nyud")
    assert resolve_normalization(chosen) == "nyud"


def test_val_normalization_must_share_the_training_scale():
    """Validation may feed the grey-world balance clipped (or not), never another scale:
    refused when built, and again once the training normalisation is resolved."""
    clip = TrainConfig(
        normalization="imagenet-greyworld", val_normalization="imagenet-greyworld-clip"
    )
    assert deployed_normalization(clip) == "imagenet-greyworld-clip"
    assert deployed_normalization(clip.replace(val_normalization=None)) == "imagenet-greyworld"
    message = (
        "val_normalization (--val-normalization) 'caffe' puts pixels on another scale than "
        "normalization (--normalization) 'imagenet'; choose one of imagenet, "
        "imagenet-greyworld, imagenet-greyworld-clip, or none"
    )
    with pytest.raises(ConfigError) as e:
        TrainConfig(normalization="imagenet", val_normalization="caffe")
    assert str(e.value) == message
    unresolved = TrainConfig(val_normalization="caffe")  # from scratch: imagenet, once resolved
    with pytest.raises(ConfigError) as e:
        unresolved.replace(normalization=resolve_normalization(unresolved))
    assert str(e.value) == message


def test_json_round_trip_keeps_every_recipe():
    for name, cfg in RECIPES.items():
        again = TrainConfig.from_dict(json.loads(cfg.to_json()))
        assert again == cfg and isinstance(again.scale, tuple), name


def test_from_dict_refuses_what_json_can_hold():
    with pytest.raises(ConfigError, match="unknown config fields: colour, size"):
        TrainConfig.from_dict({"size": 3, "colour": "red"})
    with pytest.raises(ConfigError, match=r"^width \(--width\) must be a finite number"):
        TrainConfig.from_dict({"width": "1"})
    # Whole numbers in float fields are stored as floats (JSON writes 1.0 as 1).
    assert TrainConfig.from_dict({"width": 1, "lr": 1}).width.is_integer()
    assert type(TrainConfig.from_dict({"width": 1}).width) is float


def config_from(flags: str) -> TrainConfig:
    from fcnseg.cli import _config_from_args

    args = build_parser().parse_args(["train", "--recipe", "camvid-fcn8s", *shlex.split(flags)])
    return _config_from_args(args)


def test_flags_override_only_what_is_given():
    recipe = RECIPES["camvid-fcn8s"]
    assert config_from("") == recipe
    cfg = config_from("--lr 0.5 --no-flip --scale 1 2 --iterations 7")
    assert cfg == recipe.replace(lr=0.5, flip=False, scale=(1.0, 2.0), iterations=7)
    cfg = config_from("--color-jitter 0.3 --label-smoothing 0.1")
    assert cfg == recipe.replace(color_jitter=0.3, label_smoothing=0.1)


def test_optional_fields_can_be_set_back_to_none():
    assert RECIPES["camvid-fcn8s"].crop == 240 and RECIPES["camvid-fcn8s"].data_root
    cfg = config_from("--crop none --data-root None --batch-size 1")
    assert cfg.crop is None and cfg.data_root is None
    cfg = config_from("--backbone-weights imagenet --init-from a.pt --normalization caffe")
    assert (cfg.backbone_weights, cfg.init_from, cfg.normalization) == ("imagenet", "a.pt", "caffe")
    again = config_from("--backbone-weights none --init-from NONE --normalization none")
    assert (again.backbone_weights, again.init_from, again.normalization) == (None, None, None)
    assert config_from("--backbone-weights ./none").backbone_weights == "./none"


def test_bad_flags_end_in_one_line_and_create_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    for flags, field in [("--iterations 0", "iterations"), ("--scale 2 1", "scale"),
                         ("--class-weighting medain", "class_weighting")]:  # fmt: skip
        assert cli_main(["train", *shlex.split(flags), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"fcnseg: error: {field} ({option_name(field)})"), err
        assert "\n" not in err and not out.exists()
    with pytest.raises(SystemExit):
        cli_main(["train", "--crop", "abc"])  # argparse's own message: not an int
    assert "--crop: invalid int value: 'abc'" in capsys.readouterr().err


def save_checkpoint_with(path, normalization):
    torch.save({"model": {"w": torch.zeros(1)}, "normalization": normalization}, path)
    return str(path)


def test_normalization_follows_the_starting_weights(tmp_path, monkeypatch):
    scratch = TrainConfig()
    assert resolve_normalization(scratch) == "imagenet"
    assert resolve_normalization(scratch.replace(normalization="caffe")) == "caffe"
    assert resolve_normalization(scratch.replace(backbone_weights="local.pth")) == "imagenet"
    # imagenet weights: read from the published file's entry, not assumed.
    caffe_vgg = dataclasses.replace(weights.IMAGENET_WEIGHTS["vgg16"], normalization="caffe")
    monkeypatch.setitem(weights.IMAGENET_WEIGHTS, "vgg16", caffe_vgg)
    published = scratch.replace(backbone_weights="imagenet")
    assert resolve_normalization(published) == "caffe"
    assert resolve_normalization(published.replace(batch_norm=True)) == "imagenet"  # vgg16_bn
    # A coarser net to start from: its checkpoint's normalisation wins over the backbone's.
    ckpt = save_checkpoint_with(tmp_path / "imagenet.pt", "imagenet")
    assert resolve_normalization(published.replace(init_from=ckpt)) == "imagenet"
    ckpt = save_checkpoint_with(tmp_path / "caffe.pt", "caffe")
    assert resolve_normalization(TrainConfig(init_from=ckpt)) == "caffe"
    # A run validated with the clip trained without it: a fine-tune trains as it did.
    clipped = tmp_path / "clipped.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "normalization": "imagenet-greyworld-clip",
                "train_config": {"normalization": "imagenet-greyworld"}}, clipped)  # fmt: skip
    assert resolve_normalization(TrainConfig(init_from=str(clipped))) == "imagenet-greyworld"
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(1)}, bare)
    assert resolve_normalization(TrainConfig(init_from=str(bare))) == "imagenet"
    with pytest.raises(weights.WeightsError, match="missing.pt: no such checkpoint"):
        resolve_normalization(TrainConfig(init_from=str(tmp_path / "missing.pt")))


def test_a_folder_for_the_synthetic_scenes_is_refused():
    with pytest.raises(ConfigError, match=r"data_root \(--data-root\) must be none"):
        TrainConfig(dataset="synthetic", data_root="photos")
    with pytest.raises(ConfigError, match=r"val_root \(--val-root\) must be none"):
        TrainConfig(dataset="folder", data_root="mine", val_dataset="synthetic", val_root="x")
    assert TrainConfig(dataset="folder", data_root="mine", val_dataset="synthetic").val_root is None
