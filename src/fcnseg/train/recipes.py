"""Training recipes: named presets of :class:`~fcnseg.train.config.TrainConfig` (data, not code).

Every preset states its loss normalisation and learning rate together, because
they only make sense together: the reference sums the loss over all pixels, so
its lr (1e-10 for FCN-32s) is ~250,000 times smaller than a mean loss would want.
"""

from __future__ import annotations

from fcnseg.errors import ConfigError
from fcnseg.train.config import TrainConfig

# The reference (fcn.berkeleyvision.org) trains on SBD train with whole images,
# batch 1, a summed loss and fixed lr; it validates on seg11valid, VOC2011 val minus
# SBD train, with VOC2011's own labels: --data-root is SBD's dataset/ folder,
# --val-root VOC2011's. The pixels are normalised as the starting weights expect
# (torchvision's ImageNet weights: ImageNet mean/std; FCN-16s and FCN-8s: the
# FCN-32s/16s checkpoint's), so normalization is left unset.
_VOC = TrainConfig(
    dataset="sbd",
    train_split="train",
    val_dataset="voc",
    val_split="seg11valid",
    backbone_weights="imagenet",
    iterations=100_000,
    momentum=0.99,
    weight_decay=5e-4,
    schedule="fixed",
    normalize_loss=False,
    eval_every=4000,
)

# The reference's other datasets (section 5), with its solvers: whole images, batch 1,
# summed loss, fixed lr, momentum 0.99, starting from ImageNet weights. The iteration
# counts are those its solve.py scripts run (50 evaluations, every 8000 iterations
# on PASCAL-Context, every 2000 on NYUDv2). PASCAL-Context trains on VOC2010 train
# and validates on val (--data-root: VOC2010 with the Context labels, see
# fcnseg.data.pascal_context); NYUDv2 trains on train + val (the reference's
# trainval) and is tested on test.
_CONTEXT = _VOC.replace(
    dataset="pascal-context", val_dataset=None, val_split="val", iterations=400_000,
    eval_every=8000,
)  # fmt: skip
_NYUD = _VOC.replace(
    model="fcn32s", lr=1e-10, val_dataset=None, train_split="train+val", val_split="test",
    eval_every=2000,
)  # fmt: skip
# SIFT Flow trains both heads (semantic + geometric, one summed loss each) on trainval
# and tests on test, 50 evaluations every 2000 iterations; best.pt by the semantic
# head's mean IU. Its FCN-8s solver keeps FCN-16s's lr, 1e-12 (VOC's goes to 1e-14).
_SIFTFLOW = _VOC.replace(
    dataset="siftflow", val_dataset=None, train_split="trainval", val_split="test",
    eval_every=2000,
)  # fmt: skip

# From scratch on CamVid (no ImageNet weights here): a narrow batch-norm FCN-8s
# with the efficient geometry (pad 1: a 240 crop costs a third of the reference's
# 440x440 padded input), random crops, mean loss with median-frequency class
# weights, AdamW with poly decay. About 45 minutes to an hour on 2 CPU cores (README).
_CAMVID = TrainConfig(
    model="fcn8s",
    width=0.25,
    batch_norm=True,
    pad=1,
    dataset="camvid",
    data_root="../shared/datasets/camvid",
    crop=240,
    scale=(0.75, 1.25),
    batch_size=8,
    workers=1,
    iterations=2400,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    warmup=100,
    class_weighting="median",
    eval_every=400,
    # bf16 where the CPU computes it natively (AVX512-BF16, as on the machine that measured
    # the held-out runs) or on a GPU; fp32 on an AVX2 CPU, where bf16 is about 10x slower.
    precision="auto",
)


def _stage(base: TrainConfig, model: str, lr: float, *, after: str) -> TrainConfig:
    """A later stage of staged training (section 4.2): ``model`` starts from the best
    checkpoint of recipe ``after``, run in its default folder, not from ImageNet."""
    return base.replace(
        model=model, lr=lr, backbone_weights=None, init_from=f"runs/{after}/best.pt"
    )


RECIPES: dict[str, TrainConfig] = {
    "voc-fcn32s": _VOC.replace(model="fcn32s", lr=1e-10),
    # Staged (section 4.2): FCN-16s starts from a trained FCN-32s, FCN-8s from FCN-16s.
    "voc-fcn16s": _stage(_VOC, "fcn16s", 1e-12, after="voc-fcn32s"),
    "voc-fcn8s": _stage(_VOC, "fcn8s", 1e-14, after="voc-fcn16s"),
    "voc-fcn8s-atonce": _VOC.replace(model="fcn8s-atonce", lr=1e-10, iterations=300_000),
    # The reference's solver says "lr for normalized softmax" (1e-4, iter_size 20).
    "voc-fcn-alexnet": _VOC.replace(
        model="fcn-alexnet", lr=1e-4, momentum=0.9, accumulate=20, normalize_loss=True
    ),
    "pascalcontext-fcn32s": _CONTEXT.replace(model="fcn32s", lr=1e-10),
    "pascalcontext-fcn16s": _stage(_CONTEXT, "fcn16s", 1e-12, after="pascalcontext-fcn32s"),
    "pascalcontext-fcn8s": _stage(_CONTEXT, "fcn8s", 1e-14, after="pascalcontext-fcn16s"),
    "nyud-fcn32s-color": _NYUD.replace(dataset="nyud"),
    "nyud-fcn32s-hha": _NYUD.replace(dataset="nyud-hha"),
    # conv1_1 gets the RGB filters and their mean for depth (fcnseg.nets.surgery).
    "nyud-fcn32s-color-d": _NYUD.replace(dataset="nyud-color-d", model="fcn32s-color-d"),
    # Late fusion: each stream starts from the trained colour or HHA net (per-stream init_from).
    "nyud-fcn32s-color-hha": _NYUD.replace(
        dataset="nyud-color-hha",
        model="fcn32s-color-hha",
        lr=1e-12,
        backbone_weights=None,
        init_from="color=runs/nyud-fcn32s-color/best.pt,hha=runs/nyud-fcn32s-hha/best.pt",
    ),
    "siftflow-fcn32s": _SIFTFLOW.replace(model="fcn32s-sem-geo", lr=1e-10),
    "siftflow-fcn16s": _stage(_SIFTFLOW, "fcn16s-sem-geo", 1e-12, after="siftflow-fcn32s"),
    "siftflow-fcn8s": _stage(_SIFTFLOW, "fcn8s-sem-geo", 1e-12, after="siftflow-fcn16s"),
    "camvid-fcn8s": _CAMVID,
    # The same, chosen on a drive it never trains on (issue #10): CamVid's val split is
    # sequence 0016E5, which also gives 204 of the 367 training frames. Here sequence
    # 0006R0 is held out of train + val (367 frames to train on, 101 to validate).
    "camvid-fcn8s-heldout": _CAMVID.replace(
        train_split="train+val:-0006R0", val_split="train+val:0006R0"
    ),
    # The settings the held-out drives chose (issue #10: the longer schedule, 9,600
    # iterations, ENet's class weights, label smoothing 0.1 and the grey-world balance that
    # takes a drive's light out of its photos), trained on all 468 train + val frames, as
    # published CamVid results are. Val is part of its training data, so it is evaluated
    # once, at the end: best.pt is the last weights, not a choice made on frames it has seen.
    "camvid-fcn8s-trainval": _CAMVID.replace(
        train_split="train+val",
        iterations=9600,
        class_weighting="enet",
        label_smoothing=0.1,
        normalization="imagenet-greyworld",
        eval_every=9600,
    ),
    # The built-in demo: trains in minutes on 2 CPU cores.
    "synthetic-demo": TrainConfig(
        model="fcn8s",
        width=0.125,
        batch_norm=True,
        dataset="synthetic",
        crop=96,
        scale=(0.8, 1.25),
        batch_size=8,
        iterations=600,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-4,
        warmup=30,
        eval_every=200,
    ),
}

DEFAULT_RECIPE = "synthetic-demo"
"""What ``fcnseg train`` runs when no recipe is named."""


def get_recipe(name: str) -> TrainConfig:
    """A recipe by name (:data:`RECIPES`)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
