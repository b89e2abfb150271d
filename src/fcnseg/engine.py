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
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from fcnseg.checkpoint import load_checkpoint, save_checkpoint
from fcnseg.datasets import SegmentationDataset, build_dataset, median_frequency_weights
from fcnseg.loss import pixel_loss
from fcnseg.metrics import ConfusionMatrix
from fcnseg.models import build_model
from fcnseg.recipes import TrainConfig
from fcnseg.surgery import init_from, read_state_dict
from fcnseg.transforms import eval_transform, train_transform

COLLAPSE_SHARE = 0.95


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class StreamSampler(Sampler):
    """Endless ``(index, augmentation seed)`` pairs from position ``start`` on.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``; the augmentation seed of
    position ``p`` is derived from ``(seed, p)``. Nothing depends on what came before.
    """

    def __init__(self, size: int, seed: int, start: int = 0) -> None:
        self.size, self.seed, self.start = size, seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.size)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(
                self.seed * 100_003 + epoch))  # fmt: skip
            for i in order[offset:].tolist():
                yield i, (self.seed * 1_000_003 + position) % 2**32
                position += 1


class Seeded(Dataset):
    """Applies ``transform`` to ``dataset[index]`` with ``random`` seeded per sample."""

    def __init__(self, dataset: SegmentationDataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        random.seed(seed)
        return self.transform(*self.dataset.load(index))


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
    progress: bool = True,
) -> dict:
    """Metrics of ``model`` over ``dataset`` (normalised image, label), one whole image
    at a time. Warns when the predictions collapse onto one class."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    for i in tqdm(range(len(dataset)), desc="eval", leave=False, disable=not progress):
        image, label = dataset[i]
        logits = model(image[None].to(device))
        cm.update(logits.argmax(1)[0].cpu(), label)
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


def _loader(dataset: Dataset, cfg: TrainConfig, start: int, device: torch.device) -> Iterator:
    sampler = StreamSampler(len(dataset), cfg.seed, start)
    return iter(
        DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.workers > 0,
            # A private generator: worker seeding must not consume the global RNG,
            # or a resumed run's dropout masks would differ.
            generator=torch.Generator().manual_seed(cfg.seed),
        )
    )


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train per ``cfg``, writing ``config.json``, ``metrics.jsonl``, ``last.pt`` and
    ``best.pt`` (by validation mean IU) into ``out``.

    Args:
        resume: continue from ``out/last.pt`` exactly where it stopped.
        stop_after: stop (after checkpointing) at this iteration, as if interrupted.

    Returns:
        The last validation metrics, with ``iteration`` and ``best_mean_iu``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = select_device(cfg.device)
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
    if cfg.crop is None and cfg.batch_size > 1:
        raise ValueError("whole-image training needs batch_size 1; set crop for batches")

    model = make_model(cfg, info.num_classes).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it))
    start, best = 0, -1.0
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, best = ckpt["iteration"], ckpt["best_mean_iu"]
        _set_rng_state(ckpt["rng"])
    else:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    log = RunLog(out / "metrics.jsonl")

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

    batches = _loader(stream, cfg, start * cfg.accumulate * cfg.batch_size, device)
    end = cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)
    bar = tqdm(range(start, end), initial=start, total=cfg.iterations, desc="train",
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    model.train()
    metrics: dict = {}
    tic, running = time.time(), []
    for it in bar:
        optimizer.zero_grad(set_to_none=True)
        for _ in range(cfg.accumulate):
            images, labels = next(batches)
            logits = model(images.to(device, non_blocking=True))
            loss = pixel_loss(
                logits,
                labels.to(device, non_blocking=True),
                normalize=cfg.normalize_loss,
                class_weights=class_weights,
            )
            (loss / cfg.accumulate).backward()
            running.append(loss.item())
        optimizer.step()
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
            log.write(iteration=done, loss=float(np.mean(running)), lr=lr,
                      seconds=round(time.time() - tic, 2))  # fmt: skip
            running = []
        if done % cfg.eval_every == 0 or done == end:
            metrics = evaluate(model, val_set, info.num_classes, device, progress=progress)
            if "warning" in metrics:
                tqdm.write(f"warning: {metrics['warning']}")
            is_best = metrics["mean_iu"] > best
            best = max(best, metrics["mean_iu"])
            log.write(iteration=done, eval=json_safe(metrics))
            bar.write(f"iter {done}: val mean IU {metrics['mean_iu']:.4f} "
                      f"pixel acc {metrics['pixel_acc']:.4f} (best {best:.4f})")  # fmt: skip
            state = checkpoint(done, metrics)
            save_checkpoint(state, out / "last.pt")
            if is_best:
                save_checkpoint(state, out / "best.pt")
    bar.close()
    return {**metrics, "iteration": end, "best_mean_iu": best}
