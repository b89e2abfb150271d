"""Training and evaluation: short functions around one SGD loop (paper section 4.3).

The sample stream is a pure function of ``(seed, position)``: which image comes
next and how it is augmented. With the model, optimiser, scheduler and torch RNG
in the checkpoint, a resumed run continues exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from fcnseg.data.dataset import SegmentationDataset
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import eval_transform, train_transform
from fcnseg.nets.registry import build_model
from fcnseg.nets.surgery import init_from
from fcnseg.nets.weights import read_state_dict
from fcnseg.train.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.device import memory_format
from fcnseg.train.distributed import Context, all_reduce_sum, setup, teardown
from fcnseg.train.loss import loss_denominator, median_frequency_weights, pixel_loss
from fcnseg.train.metrics import ConfusionMatrix

COLLAPSE_SHARE = 0.95


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
    """Applies ``transform`` to ``dataset[index]`` with a ``random.Random(seed)`` per sample."""

    def __init__(self, dataset: SegmentationDataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        return self.transform(*self.dataset.load(index), random.Random(seed))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weights decay; biases and norm parameters learn ``bias_lr_mult`` x faster, no decay."""
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    others = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": weights, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": others, "weight_decay": 0.0, "lr": cfg.lr * cfg.bias_lr_mult},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def lr_factor(cfg: TrainConfig, iteration: int) -> float:
    """Multiplier of the base lr: linear warm-up, then fixed or poly decay."""
    if iteration < cfg.warmup:
        return (iteration + 1) / cfg.warmup
    if cfg.schedule == "fixed":
        return 1.0
    if cfg.schedule == "poly":
        return (1 - iteration / cfg.iterations) ** cfg.poly_power
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose fixed or poly")


def make_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    model = build_model(
        cfg.model,
        num_classes,
        backbone_weights=cfg.backbone_weights,
        learnable_upsampling=cfg.learnable_upsampling,
        batch_norm=cfg.batch_norm,
        width=cfg.width,
        pad=cfg.pad,
        dropout=cfg.dropout,
    )
    if cfg.init_from:
        init_from(model, read_state_dict(cfg.init_from))
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
) -> dict:
    """Metrics of ``model`` over ``dataset`` (normalised image, label), whole images.

    Up to ``batch_size`` consecutive images of the same size go through at once,
    channels-last if asked. Warns when the predictions collapse onto one class.
    """
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    images, labels = [], []

    def flush() -> None:
        batch = torch.stack(images).to(device, memory_format=memory_format(channels_last))
        for pred, label in zip(model(batch).argmax(1).cpu(), labels, strict=True):
            cm.update(pred, label)
        images.clear()
        labels.clear()

    # Each rank takes every world-th image; the summed matrices are the whole set's.
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    for i in tqdm(range(rank, len(dataset), world), desc="eval", leave=False, disable=not progress):
        image, label = dataset[i]
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            flush()
        images.append(image)
        labels.append(label)
    if images:
        flush()
    model.train(was_training)
    cm.all_reduce()
    metrics = cm.compute()
    truth = cm.mat.sum(1)
    if cm.dominant_fraction() > COLLAPSE_SHARE and (truth > 0).sum() > 1:
        cls = int(cm.mat.sum(0).argmax())
        metrics["warning"] = (
            f"predictions collapsed: {cm.dominant_fraction():.0%} of pixels are class {cls}. "
            "Check the lr against the loss normalisation (README: 'Loss and learning rate')."
        )
    return metrics


class RunLog:
    """Appends JSON lines to ``metrics.jsonl`` in the run folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, **record) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False, default=_json_default) + "\n")


def _json_default(value):
    raise TypeError(f"not JSON serialisable: {value!r}")


def json_safe(obj):
    """NaN -> None, recursively, so metrics serialise as strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _loader(dataset: Dataset, cfg: TrainConfig, iteration: int, ctx: Context) -> Iterator:
    if cfg.batch_size % ctx.world:
        raise ValueError(f"batch_size {cfg.batch_size} (global) must divide by {ctx.world} ranks")
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
            # A private generator: worker seeding must not consume the global RNG,
            # or a resumed run's dropout masks would differ.
            generator=torch.Generator().manual_seed(cfg.seed),
        )
    )


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _step_loss(
    model: nn.Module, images, labels, cfg: TrainConfig, class_weights, ctx: Context
) -> tuple[torch.Tensor, float]:
    """The loss to backpropagate on this rank, and the global loss value to log.

    The loss is normalised by the *global* count of valid pixels (summed over
    ranks) and scaled by the world size, so that DDP's gradient average equals
    the gradient of one process that saw the whole global batch.
    """
    images = images.to(
        ctx.device, non_blocking=True, memory_format=memory_format(cfg.channels_last)
    )
    labels = labels.to(ctx.device, non_blocking=True)
    dtype = AUTOCAST[cfg.precision]
    with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(images)
    total = pixel_loss(logits.float(), labels, normalize=False, class_weights=class_weights)
    if cfg.normalize_loss:
        denom = loss_denominator(labels, class_weights).to(total)
    else:  # the reference's sum: a global denominator of 1
        denom = torch.full_like(total, 1 / ctx.world)
    stats = all_reduce_sum(torch.stack([total.detach(), denom]))  # global sum, denominator
    if stats[1] <= 0:  # every pixel void
        return total * 0.0, 0.0
    return total * (ctx.world / stats[1]), (stats[0] / stats[1]).item()


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train per ``cfg``, writing ``config.json``, ``metrics.jsonl``, ``last.pt`` and
    ``best.pt`` (by validation mean IU) into ``out``. Under torchrun, every rank
    trains on its share of each global batch and rank 0 writes the files.

    Args:
        resume: continue from ``out/last.pt`` exactly where it stopped.
        stop_after: stop (after checkpointing) at this iteration, as if interrupted.

    Returns:
        The last validation metrics, with ``iteration`` and ``best_mean_iu``.
    """
    ctx = setup(cfg.device)
    try:
        return _train(cfg, Path(out), ctx, resume=resume, progress=progress, stop_after=stop_after)
    finally:
        teardown()


def _train(cfg, out: Path, ctx: Context, *, resume, progress, stop_after) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    progress = progress and ctx.is_main
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    train_set = build_dataset(cfg.dataset, cfg.data_root, cfg.train_split)
    val_set = build_dataset(
        cfg.dataset, cfg.data_root, cfg.val_split, eval_transform(cfg.normalization)
    )
    info = train_set.info
    class_weights = median_frequency_weights(train_set) if cfg.class_weighting == "median" else None
    stream = Seeded(
        train_set,
        train_transform(
            normalization=cfg.normalization, scale=cfg.scale, crop=cfg.crop, flip=cfg.flip
        ),
    )
    if cfg.crop is None and cfg.batch_size > ctx.world:
        raise ValueError("whole-image training needs 1 image per rank; set crop for batches")

    model = make_model(cfg, info.num_classes).to(ctx.device)
    model = model.to(memory_format=memory_format(cfg.channels_last))
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it))
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    start, best = 0, -1.0
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, best = ckpt["iteration"], ckpt["best_mean_iu"]
        _set_rng_state(ckpt["rng"])
    elif ctx.is_main:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if ctx.is_main:
        (out / "config.json").write_text(cfg.to_json())
    log = RunLog(out / "metrics.jsonl")
    net = model
    if ctx.distributed:
        if ctx.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = DistributedDataParallel(
            net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net)

    def checkpoint(iteration: int, metrics: dict | None) -> dict:
        return {
            "model": model.state_dict(),
            "model_config": model.config.to_dict(),
            "dataset": dataclasses.asdict(info),
            "normalization": cfg.normalization,
            "train_config": cfg.to_dict(),
            "iteration": iteration,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "best_mean_iu": best,
            "metrics": metrics,
        }

    batches = _loader(stream, cfg, start, ctx)
    end = cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)
    bar = tqdm(range(start, end), initial=start, total=cfg.iterations, desc="train",
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    net.train()
    metrics: dict = {}
    tic, running = time.time(), []
    for it in bar:
        optimizer.zero_grad(set_to_none=True)
        for _ in range(cfg.accumulate):
            images, labels = next(batches)
            loss, value = _step_loss(net, images, labels, cfg, class_weights, ctx)
            scaler.scale(loss / cfg.accumulate).backward()
            running.append(value)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if not math.isfinite(running[-1]):
            raise FloatingPointError(
                f"loss is {running[-1]} at iteration {it + 1}: lower the lr "
                f"({cfg.lr:g}; normalize_loss={cfg.normalize_loss})"
            )
        done = it + 1
        if done % cfg.log_every == 0 or done == end:
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{np.mean(running):.4f}", lr=f"{lr:.2e}")
            if ctx.is_main:
                log.write(iteration=done, loss=float(np.mean(running)), lr=lr,
                          seconds=round(time.time() - tic, 2))  # fmt: skip
            running = []
        if done % cfg.eval_every == 0 or done == end:
            metrics = evaluate(model, val_set, info.num_classes, ctx.device,
                               channels_last=cfg.channels_last, progress=progress)  # fmt: skip
            is_best = metrics["mean_iu"] > best
            best = max(best, metrics["mean_iu"])
            if ctx.is_main:
                if "warning" in metrics:
                    tqdm.write(f"warning: {metrics['warning']}")
                log.write(iteration=done, eval=json_safe(metrics))
                tqdm.write(f"iter {done}: val mean IU {metrics['mean_iu']:.4f} "
                           f"pixel acc {metrics['pixel_acc']:.4f} (best {best:.4f})")  # fmt: skip
                state = checkpoint(done, metrics)
                save_checkpoint(state, out / "last.pt")
                if is_best:
                    save_checkpoint(state, out / "best.pt")
    bar.close()
    return {**metrics, "iteration": end, "best_mean_iu": best}
