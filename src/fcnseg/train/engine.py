"""Training and evaluation: short functions around one SGD loop (paper section 4.3).

The sample stream is a pure function of ``(seed, position)``: which image comes
next, how it is augmented, and its dropout masks (each sample carries its seed
into :class:`~fcnseg.nets.fcn.SampleDropout`). No step reads a global RNG, so N
ranks sharing a global batch train exactly as one process does, and with the
model, optimiser and scheduler in the checkpoint a resumed run continues exactly
as if it had never stopped.

A run writes into a :class:`~fcnseg.train.run.RunFolder`, under its lock, and
only once its data are checked and its model is built.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from fcnseg.data.check import check_pairs, default_cache_dir
from fcnseg.data.dataset import SegmentationDataset
from fcnseg.data.info import DataError, DatasetInfo
from fcnseg.data.transforms import eval_transform, train_transform
from fcnseg.errors import ConfigError
from fcnseg.nets.fcn import FCN
from fcnseg.nets.registry import build_model
from fcnseg.nets.surgery import init_from, init_streams
from fcnseg.train.checkpoint import load_checkpoint
from fcnseg.train.config import (
    TrainConfig,
    build_train_set,
    build_val_sets,
    deployed_normalization,
    resolve_normalization,
    stream_sources,
)
from fcnseg.train.device import (
    PRECISION_NAMES,
    memory_format,
    resolve_precision,
    warn_emulated_bf16,
)
from fcnseg.train.distributed import Context, all_reduce_sum, process_group
from fcnseg.train.ema import ema_decay, update_ema
from fcnseg.train.loss import CLASS_WEIGHTS, heads_loss, loss_denominators
from fcnseg.train.metrics import ConfusionMatrix
from fcnseg.train.run import RunFolder, check_resume

COLLAPSE_SHARE = 0.95
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Images (N, C, H, W), labels (N, H, W) int64 (a K-head net's: (N, K, H, W)) and the
samples' seeds (N,) int64."""


class StreamSampler(Sampler):
    """Endless ``(index, augmentation seed)`` pairs from global position ``start`` on.

    Epoch ``e`` is a permutation seeded by ``(seed, e)`` (reshuffled every epoch);
    the augmentation seed of position ``p`` is derived from ``(seed, p)``. With
    ``world`` ranks, consecutive blocks of ``block`` positions go to the ranks in
    turn, so the ranks together see exactly the single-process stream, whatever the
    world size: a run can resume on any number of processes.
    """

    def __init__(
        self, size: int, seed: int, start: int = 0, *, rank: int = 0, world: int = 1,
        block: int = 1,
    ) -> None:  # fmt: skip
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world, self.block = rank, world, block

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.size)
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            for i in torch.randperm(self.size, generator=generator)[offset:].tolist():
                if (position // self.block) % self.world == self.rank:
                    yield i, (self.seed * 1_000_003 + position) % 2**32
                position += 1


class Seeded(Dataset):
    """``(index, seed)`` -> ``(image, label, seed)``: ``transform`` of ``dataset[index]``,
    drawing from a ``random.Random(seed)`` of its own. The seed goes on with the
    sample, to its dropout masks."""

    def __init__(self, dataset: SegmentationDataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        image, label = self.transform(*self.dataset.load(index), random.Random(seed))
        return image, label, seed


OPTIMIZERS: dict[str, Callable[[list[dict], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum),
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr),
}
"""The optimiser of each ``optimizer`` value the config allows, from its parameter groups."""

SCHEDULES: dict[str, Callable[[TrainConfig, int], float]] = {
    "fixed": lambda cfg, iteration: 1.0,
    "poly": lambda cfg, iteration: (1 - iteration / cfg.iterations) ** cfg.poly_power,
}
"""The lr multiplier after warm-up of each ``schedule`` value the config allows."""


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weights decay; biases and norm parameters learn ``bias_lr_mult`` x faster, no decay."""
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    others = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": weights, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": others, "weight_decay": 0.0, "lr": cfg.lr * cfg.bias_lr_mult},
    ]
    return OPTIMIZERS[cfg.optimizer](groups, cfg)


def lr_factor(cfg: TrainConfig, iteration: int) -> float:
    """Multiplier of the base lr: linear warm-up, then fixed or poly decay."""
    if iteration < cfg.warmup:
        return (iteration + 1) / cfg.warmup
    return SCHEDULES[cfg.schedule](cfg, iteration)


def make_model(cfg: TrainConfig, num_classes: int, *, pretrained: bool = True) -> nn.Module:
    """The model ``cfg`` describes, for ``num_classes`` classes.

    Args:
        pretrained: load the starting weights (``backbone_weights``, then
            ``init_from``: one checkpoint, or one per stream). A resumed run leaves
            them out: its checkpoint replaces every weight, and the files may have
            moved since (or need a download).
    """
    model = build_model(
        cfg.model,
        num_classes,
        backbone_weights=cfg.backbone_weights if pretrained else None,
        learnable_upsampling=cfg.learnable_upsampling,
        batch_norm=cfg.batch_norm,
        width=cfg.width,
        pad=cfg.pad,
        dropout=cfg.dropout,
    )
    sources = stream_sources(cfg)
    if pretrained and sources:
        init_streams(model, sources)
    elif pretrained and cfg.init_from:
        init_from(model, cfg.init_from)  # messages name the file
    return model


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    device: torch.device,
    *,
    batch_size: int = 4,
    channels_last: bool = False,
    progress: bool = True,
    on_image: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> dict:
    """Metrics of ``model`` over ``dataset`` (normalised image, label), whole images.

    Up to ``batch_size`` consecutive images of the same size go through at once,
    channels-last if asked. Warns when the predictions collapse onto one class.
    ``on_image(index, prediction, label)`` is called for each image, both (H, W)
    int64 on the CPU (per-image scores: ``fcnseg report``).
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    images, labels, indices = [], [], []

    def flush() -> None:
        batch = torch.stack(images).to(device, memory_format=memory_format(channels_last))
        preds = model(batch).argmax(1).cpu()
        for index, pred, label in zip(indices, preds, labels, strict=True):
            cm.update(pred, label)
            if on_image is not None:
                on_image(index, pred, torch.as_tensor(label))
        images.clear()
        labels.clear()
        indices.clear()

    # Each rank takes every world-th image; the summed matrices are the whole set's.
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    for i in tqdm(range(rank, len(dataset), world), desc="eval", leave=False, disable=not progress):
        image, label = dataset[i]
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            flush()
        images.append(image)
        labels.append(label)
        indices.append(i)
    if images:
        flush()
    model.train(was_training)
    cm.all_reduce()
    warning = _collapse_warning(cm)
    return {**cm.compute(), **({"warning": warning} if warning else {})}


def _collapse_warning(cm: ConfusionMatrix) -> str | None:
    """A warning when nearly every pixel is predicted as one class though the truth has several."""
    if cm.dominant_fraction() <= COLLAPSE_SHARE or (cm.mat.sum(1) > 0).sum() <= 1:
        return None
    cls = int(cm.mat.sum(0).argmax())
    return (
        f"predictions collapsed: {cm.dominant_fraction():.0%} of pixels are class {cls}. "
        "Check the lr against the loss normalisation (README: 'Loss and learning rate')."
    )


def json_safe(obj):
    """NaN -> None, recursively, so metrics serialise as strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    force: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train per ``cfg``, writing ``config.json``, ``metrics.jsonl``, ``last.pt`` and
    ``best.pt`` (by validation mean IU; of the first head, SIFT Flow's semantic one,
    for a net with several) into the run folder ``out``. Under torchrun, every rank
    trains on its share of each global batch and rank 0 writes the files.

    Args:
        resume: continue from ``out/last.pt`` exactly where it stopped. ``cfg`` may
            differ from the run's config only in :data:`~fcnseg.train.run.RESUMABLE`
            fields (e.g. more ``iterations``), unless ``force``.
        overwrite: replace the run already in ``out`` (once this run starts writing).
        stop_after: stop (after checkpointing) at this iteration, as if interrupted.

    Returns:
        The last validation metrics, with ``iteration``, ``best_mean_iu`` and
        ``trained``, the updates this call made (0 when the run had already finished).

    Raises:
        RunError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is
            given, another run holds it, or there is no checkpoint to resume.
        ConfigError: a resume that would change the model or data; a batch the
            ranks cannot share; fp16 on a CPU.
        DataError: bad training or validation data (every bad file named).
        FloatingPointError: the loss became NaN or infinite (the weights are left
            as at the last checkpoint).
    """
    # "From the weights" made concrete: config.json and checkpoints record the value used.
    cfg = cfg.replace(normalization=resolve_normalization(cfg))
    run = RunFolder(out)
    with process_group(cfg.device) as ctx, run.lock() if ctx.is_main else nullcontext():
        cfg = _check_setup(cfg, ctx)
        if ctx.is_main:
            run.check(resume=resume, overwrite=overwrite)
            # after the checks, so that a refused run gets its one error line alone
            warn_emulated_bf16(resolve_precision(cfg.precision, ctx.device), ctx.device)
        ckpt = _resume_point(run, cfg, force) if resume else None
        end = cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)
        if ckpt is not None and ckpt["iteration"] >= end:  # nothing left to do
            return {**(ckpt["metrics"] or {}), "iteration": ckpt["iteration"],
                    "best_mean_iu": ckpt["best_mean_iu"], "trained": 0}  # fmt: skip
        return _run(cfg, run, ctx, ckpt, end=end, progress=progress and ctx.is_main)


def _check_setup(cfg: TrainConfig, ctx: Context) -> TrainConfig:
    """``cfg`` with its precision made concrete for this device (``auto``: see
    :func:`~fcnseg.train.device.resolve_precision`; config.json and checkpoints record the
    one used). Refuses a global batch the ranks cannot share, and
    a precision the device lacks (fp16 on a CPU, as inference does)."""
    dtype = resolve_precision(cfg.precision, ctx.device)
    if cfg.batch_size % ctx.world:
        raise ConfigError(
            f"batch_size (--batch-size) {cfg.batch_size} is the global batch: it must "
            f"divide by {ctx.world} ranks"
        )
    if cfg.crop is None and cfg.batch_size > ctx.world:
        raise ConfigError(
            f"batch_size (--batch-size) {cfg.batch_size}: whole-image training (no --crop) "
            "takes 1 image per rank; set --crop for larger batches"
        )
    return cfg.replace(precision=PRECISION_NAMES[dtype])


def _resume_point(run: RunFolder, cfg: TrainConfig, force: bool) -> dict:
    """The run's ``last.pt``, once ``cfg`` is known not to change its model or data."""
    ckpt = load_checkpoint(run.last)
    saved = TrainConfig.from_dict(ckpt["train_config"])
    check_resume(saved, cfg, at=ckpt["iteration"], force=force)
    return ckpt


def _run(
    cfg: TrainConfig, run: RunFolder, ctx: Context, ckpt: dict | None, *, end: int, progress: bool
) -> dict:
    """Check the data, build (or restore) the model, then start writing and train."""
    data = _load_data(cfg, ctx, progress)
    t = _build(cfg, data.info.num_classes, ctx, pretrained=ckpt is None)
    if ckpt is not None:
        _restore(t, ckpt)
    start = t.iteration
    if ctx.is_main:
        run.start(cfg, start)
    metrics = _loop(t, data, run, end=end, progress=progress)
    return {**metrics, "iteration": t.iteration, "best_mean_iu": t.best,
            "trained": t.iteration - start}  # fmt: skip


@dataclass(frozen=True)
class _Data:
    """What a run reads: the training stream, the validation set of each head, class weights."""

    info: DatasetInfo
    stream: Seeded
    val: list[SegmentationDataset]
    class_weights: torch.Tensor | None


def _load_data(cfg: TrainConfig, ctx: Context, progress: bool) -> _Data:
    (train_set,) = _checked("training", lambda: [build_train_set(cfg)], ctx, progress)
    val_transform = eval_transform(deployed_normalization(cfg))
    val_sets = _checked("validation", lambda: build_val_sets(cfg, val_transform), ctx, progress)
    if val_sets[0].info.classes != train_set.info.classes:
        raise DataError(
            f"validation data: classes {', '.join(val_sets[0].info.classes)} differ from the "
            f"training data's {', '.join(train_set.info.classes)}"
        )
    weighting = CLASS_WEIGHTS.get(cfg.class_weighting)
    weights = weighting(train_set) if weighting else None
    transform = train_transform(
        normalization=cfg.normalization,
        scale=cfg.scale,
        crop=cfg.crop,
        flip=cfg.flip,
        color_jitter=cfg.color_jitter,
    )
    return _Data(train_set.info, Seeded(train_set, transform), val_sets, weights)


def _checked(
    role: str, build: Callable[[], list[SegmentationDataset]], ctx: Context, progress: bool
) -> list[SegmentationDataset]:
    """Datasets with every pair checked (by rank 0, results cached across runs in
    ``data.check``'s default folder, ``~/.cache/fcnseg/checks``); errors say which
    split (``role``) they are about."""
    try:
        datasets = build()
        if ctx.is_main:
            for dataset in datasets:
                check_pairs(dataset, cache_dir=default_cache_dir(), progress=progress)
    except DataError as e:
        raise DataError(f"{role} data: {e}") from None
    return datasets


@dataclass
class _Trainer:
    """What a run carries from one update to the next."""

    cfg: TrainConfig
    ctx: Context
    model: nn.Module  # its state_dict goes into checkpoints
    net: nn.Module  # what a step runs: the model, in DDP and compiled as asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: nn.Module | None = None  # the moving average of the weights (cfg.ema > 0)
    iteration: int = 0
    best: float = -1.0

    @property
    def deployed(self) -> nn.Module:
        """The weights that are validated and saved as the run's model."""
        return self.model if self.ema is None else self.ema


def _build(cfg: TrainConfig, num_classes: int, ctx: Context, *, pretrained: bool) -> _Trainer:
    # The run's seed sets the initialisation; the caller's global RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = make_model(cfg, num_classes, pretrained=pretrained)
    _check_stages(model, cfg)
    model = model.to(ctx.device, memory_format=memory_format(cfg.channels_last))
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it))
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema > 0 else None
    net = _wrap(model, cfg, ctx)
    return _Trainer(cfg, ctx, model, net, optimizer, scheduler, scaler, ema)


def _check_stages(model: nn.Module, cfg: TrainConfig) -> None:
    """Refuse an auxiliary loss on a net without coarser stages to put it on."""
    if cfg.aux_weight and not (isinstance(model, FCN) and model.has_stages):
        raise ConfigError(
            f"aux_weight (--aux-weight) {cfg.aux_weight:g} needs a one-head net with skips "
            f"(fcn16s, fcn8s) to supervise its coarser stages; {cfg.model} has none: use 0"
        )


def _wrap(model: nn.Module, cfg: TrainConfig, ctx: Context) -> nn.Module:
    """The model as a step runs it: DDP over the ranks (SyncBatchNorm on GPUs), compiled."""
    net = model
    if ctx.distributed:
        if ctx.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # swaps the model's BN layers
        net = DistributedDataParallel(
            net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    return torch.compile(net) if cfg.compile else net


def _restore(t: _Trainer, ckpt: dict) -> None:
    try:
        # With an average, "model" holds it and "train_model" the weights being trained.
        t.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if t.ema is not None:
            t.ema.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # only after --force: the run's weights fit the old model
        problem = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise ConfigError(f"last.pt does not fit the changed model: {problem}") from None
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    if t.scaler.is_enabled() and ckpt.get("scaler"):  # fp16 before and now
        t.scaler.load_state_dict(ckpt["scaler"])
    t.iteration, t.best = ckpt["iteration"], ckpt["best_mean_iu"]


def _state(t: _Trainer, info: DatasetInfo, metrics: dict) -> dict:
    """The checkpoint: enough to rebuild the model alone, or to resume the run exactly."""
    averaged = {} if t.ema is None else {"train_model": t.model.state_dict()}
    return {
        "model": t.deployed.state_dict(),
        **averaged,
        "model_config": t.model.config.to_dict(),
        "dataset": dataclasses.asdict(info),
        "normalization": deployed_normalization(t.cfg),
        "train_config": t.cfg.to_dict(),
        "iteration": t.iteration,
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(),
        "best_mean_iu": t.best,
        "metrics": metrics,
    }


def _loader(dataset: Seeded, cfg: TrainConfig, iteration: int, ctx: Context) -> Iterator[Batch]:
    """This rank's micro-batches from update ``iteration`` on."""
    per_rank = cfg.batch_size // ctx.world
    start = iteration * cfg.accumulate * cfg.batch_size
    sampler = StreamSampler(
        len(dataset), cfg.seed, start, rank=ctx.rank, world=ctx.world, block=per_rank
    )
    return iter(
        DataLoader(
            dataset,
            batch_size=per_rank,
            sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=ctx.device.type == "cuda",
            persistent_workers=cfg.workers > 0,
            # A private generator: worker seeding leaves the global RNG alone.
            generator=torch.Generator().manual_seed(cfg.seed),
        )
    )


def _loop(t: _Trainer, data: _Data, run: RunFolder, *, end: int, progress: bool) -> dict:
    """Update until iteration ``end``, logging the loss and evaluating as the config says."""
    batches = _loader(data.stream, t.cfg, t.iteration, t.ctx)
    bar = tqdm(total=t.cfg.iterations, initial=t.iteration, desc="train", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    t.net.train()
    metrics: dict = {}
    losses: list[float] = []
    tic = time.time()
    while t.iteration < end:
        losses.append(_update(t, batches, data.class_weights))
        bar.update()
        if t.iteration % t.cfg.log_every == 0 or t.iteration == end:
            _log_loss(t, run, bar, losses, time.time() - tic)
            losses = []
        if t.iteration % t.cfg.eval_every == 0 or t.iteration == end:
            metrics = _evaluate(t, data, run, progress)
    bar.close()
    return metrics


def _update(t: _Trainer, batches: Iterator[Batch], class_weights: torch.Tensor | None) -> float:
    """One parameter update over ``accumulate`` micro-batches: the gradient of one
    batch of ``accumulate x batch_size`` images. Returns the update's loss.

    Raises:
        FloatingPointError: the loss is not finite; the weights are left unchanged.
    """
    cfg, ctx = t.cfg, t.ctx
    micro = [next(batches) for _ in range(cfg.accumulate)]
    denominators = _denominators(micro, cfg, class_weights)
    t.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=ctx.device)
    for batch in micro:
        loss = _step_loss(t.net, batch, denominators, cfg, class_weights, ctx)
        # DDP averages the ranks' gradients; the update's loss is their sum.
        t.scaler.scale(loss * ctx.world).backward()
        loss_sum += loss.detach()
    value = all_reduce_sum(loss_sum).item()
    if not math.isfinite(value):
        raise FloatingPointError(
            f"loss is {value} at iteration {t.iteration + 1}: lower the lr ({cfg.lr:g} with "
            f"normalize_loss={cfg.normalize_loss}); last.pt holds the last checkpoint"
        )
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    t.iteration += 1
    if t.ema is not None:
        update_ema(t.ema, t.model, ema_decay(t.cfg.ema, t.iteration))
    return value


def _denominators(
    micro: list[Batch], cfg: TrainConfig, class_weights: torch.Tensor | None
) -> torch.Tensor | None:
    """What the update's mean loss divides by, per head (K,): the (class-weighted)
    valid pixels of all its micro-batches on all ranks. None for the summed loss."""
    if not cfg.normalize_loss:
        return None
    local = sum(loss_denominators(labels, class_weights) for _, labels, _ in micro)
    return all_reduce_sum(local)


def _step_loss(
    net: nn.Module,
    batch: Batch,
    denominators: torch.Tensor | None,
    cfg: TrainConfig,
    class_weights: torch.Tensor | None,
    ctx: Context,
) -> torch.Tensor:
    """This rank's share of the update's loss, from one micro-batch.

    With the mean loss, ``denominators`` count each head's pixels of the whole update
    (all ranks and micro-batches; None: this micro-batch's), so the shares add
    up to the mean over the update. The summed loss (the reference's) adds up
    to the sum over the update. A net with several heads adds its heads' losses.
    With ``aux_weight`` w, the coarser stages' losses are added, each times w.
    """
    images, labels, seeds = batch
    images = images.to(
        ctx.device, non_blocking=True, memory_format=memory_format(cfg.channels_last)
    )
    labels = labels.to(ctx.device, non_blocking=True)
    dtype = AUTOCAST[cfg.precision]
    with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
        if cfg.aux_weight:
            *coarse, logits = net(images, seeds=seeds, stages=True)
        else:
            coarse, logits = [], net(images, seeds=seeds)

    def loss(scores) -> torch.Tensor:
        return heads_loss(
            scores,
            labels,
            normalize=cfg.normalize_loss,
            class_weights=class_weights,
            denominators=denominators,
            label_smoothing=cfg.label_smoothing,
        )

    return sum((cfg.aux_weight * loss(scores) for scores in coarse), loss(logits))


def _log_loss(t: _Trainer, run: RunFolder, bar: tqdm, losses: list[float], seconds: float) -> None:
    lr = t.optimizer.param_groups[0]["lr"]
    bar.set_postfix(loss=f"{np.mean(losses):.4f}", lr=f"{lr:.2e}")
    if t.ctx.is_main:
        run.log(iteration=t.iteration, loss=float(np.mean(losses)), lr=lr,
                seconds=round(seconds, 2))  # fmt: skip


def _validate(t: _Trainer, data: _Data, progress: bool) -> dict:
    """The validation metrics; a net with several heads gives its first head's, with
    every head's (and its dataset) under ``heads``, as ``fcnseg eval --json`` does."""
    options = {"channels_last": t.cfg.channels_last, "progress": progress}
    if len(data.val) == 1:
        return evaluate(t.deployed, data.val[0], data.info.num_classes, t.ctx.device, **options)
    # train.heads is built on this module's evaluate: imported here, not at the top.
    from fcnseg.train.heads import evaluate_heads

    results = evaluate_heads(t.deployed, data.val, t.ctx.device, **options)
    heads = [{"dataset": v.info.name, **m} for v, m in zip(data.val, results, strict=True)]
    return {**results[0], "heads": heads}


def _evaluate(t: _Trainer, data: _Data, run: RunFolder, progress: bool) -> dict:
    """Validate, report, and checkpoint (``best.pt`` too when the mean IU improved;
    ``iter_<N>.pt`` too with ``keep_checkpoints``)."""
    metrics = _validate(t, data, progress)
    is_best = metrics["mean_iu"] > t.best
    t.best = max(t.best, metrics["mean_iu"])
    if t.ctx.is_main:
        if "warning" in metrics:
            tqdm.write(f"warning: {metrics['warning']}")
        others = "".join(f"; {head['dataset']} mean IU {head['mean_iu']:.4f}"
                         for head in metrics.get("heads", [])[1:])  # fmt: skip
        tqdm.write(f"iter {t.iteration}: val mean IU {metrics['mean_iu']:.4f} "
                   f"pixel acc {metrics['pixel_acc']:.4f} (best {t.best:.4f}){others}")  # fmt: skip
        run.log(iteration=t.iteration, eval=json_safe(metrics))
        run.save(_state(t, data.info, metrics), best=is_best, keep=t.cfg.keep_checkpoints)
    return metrics
