import pytest
import torch

from fcnseg.errors import ConfigError
from fcnseg.nets.weights import IMAGENET_WEIGHTS
from fcnseg.train.config import TrainConfig, resolve_normalization, stream_sources
from fcnseg.train.recipes import RECIPES, get_recipe

VOC = [name for name in RECIPES if name.startswith("voc-")]


def test_recipes_are_checked_configs():
    assert all(isinstance(cfg, TrainConfig) for cfg in RECIPES.values())
    assert get_recipe("camvid-fcn8s") is RECIPES["camvid-fcn8s"]
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; choose one of voc-fcn32s"):
        get_recipe("nope")


@pytest.mark.parametrize("name", VOC)
def test_voc_recipes_train_on_sbd_and_validate_on_voc_seg11valid(name):
    cfg = RECIPES[name]
    assert (cfg.dataset, cfg.train_split) == ("sbd", "train")
    assert (cfg.val_dataset, cfg.val_split) == ("voc", "seg11valid")
    assert cfg.normalization is None  # from the weights, whichever they are


@pytest.mark.parametrize("name", [n for n in VOC if RECIPES[n].init_from is None])
def test_voc_recipes_normalise_as_torchvision_weights_expect(name):
    cfg = RECIPES[name]
    assert cfg.backbone_weights == "imagenet"
    assert resolve_normalization(cfg) == "imagenet"
    # Through the weights' entry: torchvision's files were trained on ImageNet mean/std.
    assert {w.normalization for w in IMAGENET_WEIGHTS.values()} == {"imagenet"}


def test_staged_voc_recipes_start_from_the_previous_stage(tmp_path):
    # Each stage reads the previous one's default run folder (runs/<recipe>) and takes
    # its normalisation from that checkpoint: imagenet all the way down from FCN-32s.
    previous, saved = "voc-fcn32s", resolve_normalization(RECIPES["voc-fcn32s"])
    for name in ("voc-fcn16s", "voc-fcn8s"):
        cfg = RECIPES[name]
        assert cfg.init_from == f"runs/{previous}/best.pt" and cfg.backbone_weights is None
        ckpt = tmp_path / f"{previous}.pt"
        torch.save({"model": {}, "normalization": "caffe"}, ckpt)  # read, not assumed:
        assert resolve_normalization(cfg.replace(init_from=str(ckpt))) == "caffe"
        torch.save({"model": {}, "normalization": saved}, ckpt)
        previous, saved = name, resolve_normalization(cfg.replace(init_from=str(ckpt)))
        assert saved == "imagenet"


@pytest.mark.parametrize(
    "name,dataset,model,lr,iterations",
    [
        ("pascalcontext-fcn32s", "pascal-context", "fcn32s", 1e-10, 400_000),
        ("pascalcontext-fcn16s", "pascal-context", "fcn16s", 1e-12, 400_000),
        ("pascalcontext-fcn8s", "pascal-context", "fcn8s", 1e-14, 400_000),
        ("nyud-fcn32s-color", "nyud", "fcn32s", 1e-10, 100_000),
        ("nyud-fcn32s-hha", "nyud-hha", "fcn32s", 1e-10, 100_000),
        ("nyud-fcn32s-color-d", "nyud-color-d", "fcn32s-color-d", 1e-10, 100_000),
        ("nyud-fcn32s-color-hha", "nyud-color-hha", "fcn32s-color-hha", 1e-12, 100_000),
        ("siftflow-fcn32s", "siftflow", "fcn32s-sem-geo", 1e-10, 100_000),
        ("siftflow-fcn16s", "siftflow", "fcn16s-sem-geo", 1e-12, 100_000),
        ("siftflow-fcn8s", "siftflow", "fcn8s-sem-geo", 1e-12, 100_000),
    ],
)
def test_section_5_recipes_have_the_reference_solvers(name, dataset, model, lr, iterations):
    # solver.prototxt: fixed lr, momentum 0.99, weight decay 5e-4, summed loss, batch 1;
    # solve.py: 50 rounds of 8000 (PASCAL-Context) or 2000 (NYUDv2, SIFT Flow) iterations.
    cfg = RECIPES[name]
    assert (cfg.dataset, cfg.val_dataset, cfg.model, cfg.lr) == (dataset, None, model, lr)
    assert (cfg.momentum, cfg.weight_decay, cfg.schedule) == (0.99, 5e-4, "fixed")
    assert (cfg.normalize_loss, cfg.batch_size, cfg.crop) == (False, 1, None)
    assert cfg.iterations == iterations and cfg.eval_every * 50 == iterations
    splits = {"pascal-context": ("train", "val"), "siftflow": ("trainval", "test")}
    assert (cfg.train_split, cfg.val_split) == splits.get(dataset, ("train+val", "test"))
    staged = name.endswith(("fcn16s", "fcn8s", "color-hha"))
    assert (cfg.backbone_weights, cfg.init_from is not None) == (
        (None, True) if staged else ("imagenet", False)
    )


@pytest.mark.parametrize(
    "name,sources",
    [
        ("siftflow-fcn16s", "runs/siftflow-fcn32s/best.pt"),
        ("siftflow-fcn8s", "runs/siftflow-fcn16s/best.pt"),
        # solve.py: each stream from the trained colour and HHA nets.
        ("nyud-fcn32s-color-hha", {"color": "runs/nyud-fcn32s-color/best.pt",
                                   "hha": "runs/nyud-fcn32s-hha/best.pt"}),
    ],
)  # fmt: skip
def test_section_5_stages_start_from_the_previous_runs(name, sources):
    cfg = RECIPES[name]
    assert (stream_sources(cfg) or cfg.init_from) == sources
    for path in [sources] if isinstance(sources, str) else sources.values():
        assert path.split("/")[1] in RECIPES  # runs/<recipe>/best.pt
