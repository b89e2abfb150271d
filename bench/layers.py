"""Where FCN-8s spends its time: every convolution of one forward pass, timed, per layout.

Times each convolution (and 1x1 matrix product) of the faithful FCN-8s at 500x500,
batch 1, fp32, in three set-ups: NCHW; channels-last; channels-last with the 1x1
convolutions run as matrix products (fcnseg's CPU default). Each layer's
GFLOP/s against the matmul rate of the same run shows which layers fall short.

    python bench/layers.py --out bench/results/layers_cpu.md
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from inference import matmul_rate  # bench/inference.py
from torch import nn

import fcnseg
from fcnseg.convolutionalize import PointwiseLinear, pointwise_as_linear

LAYOUTS = ("NCHW", "channels_last", "channels_last + 1x1 as matmul")


def layer_seconds(model: nn.Module, x: torch.Tensor, reps: int) -> tuple[dict, dict, float]:
    """Median seconds of each convolution and of the whole pass; each convolution's FLOPs."""
    times, flops, starts = defaultdict(list), {}, {}
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | PointwiseLinear)}

    def before(name):
        return lambda module, inputs: starts.__setitem__(name, time.perf_counter())

    def after(name):
        def hook(module, inputs, out):
            times[name].append(time.perf_counter() - starts[name])
            flops[name] = 2 * out.numel() * module.weight[0].numel()

        return hook

    handles = [m.register_forward_pre_hook(before(n)) for n, m in layers.items()]
    handles += [m.register_forward_hook(after(n)) for n, m in layers.items()]
    totals = []
    with torch.inference_mode():
        model(x)
        times.clear()
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            totals.append(time.perf_counter() - t)
    for h in handles:
        h.remove()
    return {n: statistics.median(ts) for n, ts in times.items()}, flops, statistics.median(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/layers_cpu.md")
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = fcnseg.build_model("fcn8s", 21).eval()
    x = torch.randn(1, 3, args.size, args.size)
    rate = matmul_rate(torch.float32)

    results = {}
    for layout in LAYOUTS:
        model, inp = copy.deepcopy(base), x
        if layout != "NCHW":
            model = model.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        if "matmul" in layout:
            pointwise_as_linear(model)
        results[layout] = layer_seconds(model, inp, args.reps)
        print(f"{layout}: {results[layout][2]:.2f} s", flush=True)

    flops = results["NCHW"][1]
    lines = [
        f"FCN-8s (pad 100), {args.size}x{args.size}, batch 1, fp32, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}; best matmul in this run: {rate / 1e9:.0f} GFLOP/s.",
        "Median ms of each layer (GFLOP/s in brackets).",
        "",
        "| layer | GFLOP | " + " | ".join(LAYOUTS) + " |",
        "|---|---:|" + "---:|" * len(LAYOUTS),
    ]
    for name, f in flops.items():
        cells = [f"{1e3 * results[k][0][name]:.1f} ({f / results[k][0][name] / 1e9:.0f})"
                 for k in LAYOUTS]  # fmt: skip
        lines.append(f"| {name} | {f / 1e9:.2f} | " + " | ".join(cells) + " |")
    total = sum(flops.values())
    cells = [f"{1e3 * results[k][2]:.0f} ({total / results[k][2] / 1e9:.0f})" for k in LAYOUTS]
    lines.append(
        f"| whole pass (time), all convolutions (GFLOP) | {total / 1e9:.1f} | "
        + " | ".join(cells)
        + " |"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
