"""Training throughput of FCN-8s at 360x480: a plain loop against fcnseg's training step.

The plain loop is written the straightforward way (the port of bench/inference.py,
cross-entropy with ignore_index, SGD, fp32, eager). fcnseg's rows run the same
model through ``fcnseg.train.engine._step_loss`` (the step ``fcnseg train`` takes),
each option on its own. Inputs are CamVid train images preloaded in memory, so
the numbers are compute, not decoding.

    python bench/train_throughput.py --out bench/results/train_cpu.json

``--recipe NAME`` times that recipe's own net and batch instead (its width, batch norm,
padding and loss options; ``batch_size`` centre crops of ``crop`` pixels), fcnseg's
step only (``--width`` overrides the recipe's width); ``--bf16`` adds bf16 autocast on a
CPU (always timed on a GPU):

    python bench/train_throughput.py --recipe camvid-fcn8s-trainval --bf16 --compile --steps 5 \
        --out bench/results/train_cpu_camvid-trainval.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from inference import PortFCN8s
from machine import describe

import fcnseg
from fcnseg.cli import run_reporting
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import eval_transform
from fcnseg.train.config import TrainConfig
from fcnseg.train.distributed import Context
from fcnseg.train.engine import _step_loss, build_optimizer, make_model
from fcnseg.train.recipes import get_recipe

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "camvid"


def batches(n: int, batch: int, device: torch.device, crop: int | None = None):
    if CAMVID.is_dir():
        ds = build_dataset("camvid", CAMVID, "train", eval_transform())
        pairs = [ds[i] for i in range(n * batch)]
    else:
        pairs = [(torch.randn(3, 360, 480), torch.randint(0, 11, (360, 480)))] * (n * batch)
    if crop:
        pairs = [(x[..., _centre(x, -2, crop), _centre(x, -1, crop)],
                  y[_centre(y, -2, crop), _centre(y, -1, crop)]) for x, y in pairs]  # fmt: skip
    return [
        (torch.stack([p[0] for p in pairs[i : i + batch]]).to(device),
         torch.stack([p[1] for p in pairs[i : i + batch]]).to(device))
        for i in range(0, len(pairs), batch)
    ]  # fmt: skip


def _centre(t: torch.Tensor, dim: int, size: int) -> slice:
    start = (t.shape[dim] - size) // 2
    return slice(start, start + size)


def time_steps(step, data, warmup: int) -> float:
    for images, labels in data[:warmup]:
        step(images, labels)
    times = []
    for images, labels in data[warmup:]:
        t = time.perf_counter()
        step(images, labels)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_step(model, optimizer):
    def step(images, labels):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels, ignore_index=255)
        loss.backward()
        optimizer.step()

    return step


def fcnseg_step(model, cfg: TrainConfig, ctx: Context):
    optimizer = build_optimizer(model, cfg)
    net = torch.compile(model) if cfg.compile else model

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        loss = _step_loss(net, (images, labels, None), None, cfg, None, ctx)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/train_cpu.json")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 on a CPU")
    parser.add_argument("--width", type=float,
                        help="the net's width (default: 1.0, or the recipe's)")  # fmt: skip
    parser.add_argument("--recipe", help="time this recipe's net and batch (fcnseg's step)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ctx = Context(device=device)
    if args.recipe:
        base = get_recipe(args.recipe)
        base = base if args.width is None else base.replace(width=args.width)
        model = make_model(base, 11, pretrained=False).to(device)
        batch, crop = base.batch_size, base.crop
        rows = {}
    else:
        base = TrainConfig(lr=1e-3, momentum=0.9, width=1.0 if args.width is None else args.width)
        model = fcnseg.build_model("fcn8s", 11, width=base.width).to(device)
        batch, crop = args.batch, None
        port = PortFCN8s(11, base.width).to(device)
        port.load_state_dict(model.state_dict(), strict=False)
        rows = {"plain loop (fp32, eager)": lambda: plain_step(
            port, torch.optim.SGD(port.parameters(), lr=1e-3, momentum=0.9))}  # fmt: skip
    data = batches(args.steps + 1, batch, device, crop)
    variants = {"fcnseg fp32": {"precision": "fp32"},
                "+ channels_last": {"precision": "fp32", "channels_last": True}}  # fmt: skip
    if device.type == "cuda" or args.bf16:
        variants["+ bf16"] = {"precision": "bf16"}
    if device.type == "cuda":
        variants["bf16 + channels_last + compile"] = {
            "precision": "bf16", "channels_last": True, "compile": True}  # fmt: skip
    if args.compile:
        variants["+ torch.compile"] = {"precision": "fp32", "compile": True}
    for name, change in variants.items():
        cfg = base.replace(**change)

        def make(cfg=cfg):
            m = copy.deepcopy(model)
            if cfg.channels_last:
                m = m.to(memory_format=torch.channels_last)
            return fcnseg_step(m, cfg, ctx)

        rows[name] = make

    machine = {**describe(), "device": str(device)}
    print(machine, flush=True)
    results, first = [], None
    for name, make in rows.items():
        seconds = time_steps(make(), data, warmup=1)
        first = first or seconds
        results.append({"path": name, "step_s": seconds, "images_per_s": batch / seconds,
                        "speedup": first / seconds})  # fmt: skip
        print(f"{name:<36} {seconds:7.2f} s/step  {batch / seconds:6.3f} images/s  "
              f"{first / seconds:5.2f}x", flush=True)  # fmt: skip
    size = [crop, crop] if crop else [360, 480]
    out = {"machine": machine, "recipe": args.recipe, "width": base.width, "batch": batch,
           "size": size, "rows": results}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
