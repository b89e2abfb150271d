"""Where FCN-8s spends its time: every convolution of one forward pass, timed, per layout.

Times each convolution of the faithful FCN-8s at 500x500, batch 1, fp32, in NCHW
and channels-last, each with and without fc6, fc7 and the score layers run as
matrix products (``fully_connected_as_matmuls``; channels-last with them is
fcnseg's CPU default). Each layer's GFLOP/s against the matmul rate of the same
run shows which layers fall short.

    python bench/layers.py --out bench/results/layers_cpu.md
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from inference import interleaved_seconds, matmul_rate  # bench/inference.py
from torch import nn

import fcnseg
from fcnseg.cli import run_reporting
from fcnseg.nets.convolutionalize import WindowLinear, fully_connected_as_matmuls
from fcnseg.train.device import memory_format

LAYOUTS = ("NCHW", "NCHW, fc as matmuls", "channels_last", "channels_last, fc as matmuls")


class LayerTimer:
    """Forward hooks that record each convolution's seconds and FLOPs in a model."""

    def __init__(self, model: nn.Module) -> None:
        self.times, self.flops, self.starts = defaultdict(list), {}, {}
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d | WindowLinear):
                m.register_forward_pre_hook(self._before(name))
                m.register_forward_hook(self._after(name))

    def _before(self, name):
        return lambda module, inputs: self.starts.__setitem__(name, time.perf_counter())

    def _after(self, name):
        def hook(module, inputs, out):
            self.times[name].append(time.perf_counter() - self.starts[name])
            self.flops[name] = 2 * out.numel() * module.weight[0].numel()

        return hook

    def medians(self) -> dict:
        return {name: statistics.median(ts) for name, ts in self.times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/layers_cpu.md")
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = fcnseg.build_model("fcn8s", 21).eval()
    x = torch.randn(1, 3, args.size, args.size)
    rate = matmul_rate(torch.float32, "cpu")

    passes, timers = {}, {}  # layout -> a whole pass on x; its layer timer
    for layout in LAYOUTS:
        layout_format = memory_format(layout.startswith("channels_last"))
        model = copy.deepcopy(base).to(memory_format=layout_format)
        if "matmul" in layout:
            fully_connected_as_matmuls(model)
        layout_x = x.contiguous(memory_format=layout_format)
        passes[layout] = lambda _, model=model, layout_x=layout_x: model(layout_x)
        timers[layout] = LayerTimer(model)
    with torch.inference_mode():
        for layout, run in passes.items():  # warm-up
            run(x)
            timers[layout].times.clear()
        totals = interleaved_seconds(passes, x, args.reps, "cpu")
    results = {k: (timers[k].medians(), timers[k].flops, totals[k]) for k in LAYOUTS}

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
    sys.exit(run_reporting(Path(__file__).name, main))
