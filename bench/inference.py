"""Inference speed of FCN-8s: a straightforward port against fcnseg's paths, in one run.

(a) is written here the way common PyTorch ports write FCN-8s: pad 100, dense C x C
transposed convolutions, constant crops, fp32, eager. Every other row runs the same
weights through fcnseg: the default path, then each optimisation on its own. FLOPs
are counted with torch's FlopCounterMode; the floors are a large matmul timed in
the same run (the best of several sizes and repeats). The paths take turns within each
case, so that drifting load on the machine hits them all alike. Agreement is the
share of pixels whose argmax equals (a)'s. On a GPU the onnxruntime rows give way to
CUDA graphs, and the throughput case uses the batch that maximises the default
path's images/s at 500x500.

    python bench/inference.py --out bench/results/inference_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import describe
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import fcnseg
from fcnseg.cli import run_reporting
from fcnseg.data.transforms import normalize_image
from fcnseg.deploy.export import OnnxModel, export_onnx
from fcnseg.deploy.inference import Segmenter
from fcnseg.nets.upsample import bilinear_kernel
from fcnseg.train.device import PRECISION_NAMES, cpu_has_fast_bf16, resolve_precision

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "camvid" / "val"


class PortFCN8s(nn.Module):
    """FCN-8s as the common ports write it (same key names as fcnseg for the convs)."""

    def __init__(self, n: int, width: float = 1.0) -> None:
        super().__init__()
        layers, c = [], 3
        w = lambda ch: max(1, round(ch * width))  # noqa: E731
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"):  # fmt: skip
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, w(v), 3, padding=100 if c == 3 else 1), nn.ReLU(True)]
                c = w(v)
        self.features = nn.Sequential(*layers)
        self.fc6, self.fc7 = nn.Conv2d(w(512), w(4096), 7), nn.Conv2d(w(4096), w(4096), 1)
        self.score_fr = nn.Conv2d(w(4096), n, 1)
        self.score_pool4, self.score_pool3 = nn.Conv2d(w(512), n, 1), nn.Conv2d(w(256), n, 1)
        self.upscore2 = nn.ConvTranspose2d(n, n, 4, 2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(n, n, 4, 2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n, n, 16, 8, bias=False)
        for up in (self.upscore2, self.upscore_pool4, self.upscore8):
            w = torch.zeros_like(up.weight)
            w[range(n), range(n)] = bilinear_kernel(up.kernel_size[0])
            up.weight.data.copy_(w)

    def forward(self, x):
        h = x
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == 16:
                pool3 = h
            if i == 23:
                pool4 = h
        h = F.dropout(F.relu(self.fc6(h)), 0.5, self.training)
        h = F.dropout(F.relu(self.fc7(h)), 0.5, self.training)
        up2 = self.upscore2(self.score_fr(h))
        s4 = self.score_pool4(pool4)[:, :, 5 : 5 + up2.size(2), 5 : 5 + up2.size(3)]
        up4 = self.upscore_pool4(up2 + s4)
        s3 = self.score_pool3(pool3)[:, :, 9 : 9 + up4.size(2), 9 : 9 + up4.size(3)]
        out = self.upscore8(up4 + s3)
        return out[:, :, 31 : 31 + x.size(2), 31 : 31 + x.size(3)].contiguous()


def three_nets(classes: int, width: float) -> tuple[nn.Module, nn.Module, nn.Module]:
    """fcnseg's FCN-8s (random score layers: trained nets' are not 0), the port and the
    efficient geometry (pad 1), all three with the same weights, in eval mode."""
    reference = fcnseg.build_model("fcn8s", classes, width=width).eval()
    for name in ("score_fr", "score_pool4", "score_pool3"):
        nn.init.normal_(getattr(reference, name).weight, std=0.01)
    port = PortFCN8s(classes, width).eval()
    port.load_state_dict(reference.state_dict(), strict=False)
    efficient = fcnseg.build_model("fcn8s", classes, width=width, pad=1).eval()
    efficient.load_state_dict(reference.state_dict())
    return reference, port, efficient


def matmul_rate(dtype: torch.dtype, device: str, sizes=(1024, 2048, 4096), reps: int = 5) -> float:
    """The machine's practical peak: the best FLOP/s of n x n x n matmuls over sizes and repeats.

    The best, not the median: other load on the machine only ever slows a run down.
    """
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
        a @ b
        for _ in range(reps):
            sync(device)
            t = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x.to(next(model.parameters()).device))
    return counter.get_total_flops()


def interleaved_seconds(fns: dict, x: torch.Tensor, reps: int, device: str) -> dict:
    """Median seconds of each fn on ``x``, the fns taking turns so that drifting load hits all."""
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn(x)
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def best_batch(fn, size: tuple[int, int], device: str, largest: int = 64) -> int:
    """The batch (a power of 2) that maximises images/s of ``fn``, stopping at out-of-memory."""
    rates = {}
    for n in (2**i for i in range(largest.bit_length())):
        try:
            x = torch.randn(n, 3, *size)
            rates[n] = n / interleaved_seconds({"fn": fn}, x, 3, device)["fn"]
        except torch.OutOfMemoryError:
            break
        print(f"batch {n}: {rates[n]:.1f} images/s", flush=True)
        if len(rates) > 2 and rates[n] < max(rates.values()) * 0.98:
            break
    torch.cuda.empty_cache()
    return max(rates, key=rates.get)


def camvid_batch(n: int, size: tuple[int, int]) -> torch.Tensor:
    """Real road scenes (CamVid val), resized to ``size``; noise if the data is absent."""
    files = sorted(CAMVID.glob("*.png"))[:n]
    if len(files) < n:
        return torch.randn(n, 3, *size)
    from PIL import Image

    images = [np.asarray(Image.open(f).convert("RGB").resize(size[::-1])) for f in files]
    return torch.stack([normalize_image(im) for im in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/inference_cpu.json")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--batch",
        type=int,
        default=4,
        help="batch of the CPU throughput case (a GPU searches for its best)",
    )
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny net at 64x64: checks the bench runs"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    reference, port, efficient = three_nets(args.classes, 0.0625 if args.smoke else 1.0)

    onnx_dir = tempfile.mkdtemp()

    def onnx(model, name):  # the onnxruntime rows run on the CPU
        def make():
            export_onnx(model, f"{onnx_dir}/{name}.onnx")
            return Segmenter(OnnxModel(f"{onnx_dir}/{name}.onnx"))

        return make

    def seg(model=reference, **kw):
        # Segmenter casts and re-lays-out its model in place: give each path its own copy.
        return lambda: Segmenter(copy.deepcopy(model), device=device, **kw)

    fast_bf16 = device == "cuda" or cpu_has_fast_bf16()
    default = resolve_precision("auto", torch.device(device))
    fc = ", fc as matmuls" if device == "cpu" else ""  # see prepare_for_inference
    # path -> (make the runner, the eager fp32 model whose FLOPs it computes)
    paths = {
        "(a) port: pad 100, dense deconv, fp32": (lambda: port.to(device), port),
        f"fcnseg default ({PRECISION_NAMES[default]}, channels_last{fc})": (seg(), reference),
        f"fcnseg fp32, NCHW (cheap upsampling{fc})": (
            seg(precision="fp32", channels_last=False), reference),
        "+ channels_last": (seg(precision="fp32"), reference),
        "+ bf16": (seg(precision="bf16", channels_last=False), reference),
        "+ torch.compile": (seg(precision="fp32", channels_last=False, compile=True), reference),
        "+ CUDA graphs (compile, reduce-overhead)": (
            seg(precision="fp32", channels_last=False, compile="reduce-overhead"), reference),
        "+ onnxruntime": (onnx(reference, "fcn8s"), reference),
        "efficient geometry (pad 1), default path": (seg(efficient), efficient),
        "efficient geometry (pad 1), onnxruntime": (onnx(efficient, "fcn8s-pad1"), efficient),
    }  # fmt: skip
    if default == torch.float32:
        print("the default path is fp32 here: its row is the channels_last one")
        paths.pop("+ channels_last")
    if args.skip_compile:
        paths = {k: v for k, v in paths.items() if "compile" not in k}
    if not fast_bf16:
        # Emulated bf16 is an order of magnitude slower than fp32 (measured with --smoke).
        print("this CPU has no AMX / AVX512-BF16: skipping the bf16 row")
        paths.pop("+ bf16")
    unavailable = "onnxruntime" if device == "cuda" else "CUDA graphs"
    paths = {k: v for k, v in paths.items() if unavailable not in k}

    fp32_rate = matmul_rate(torch.float32, device)
    bf16_rate = matmul_rate(torch.bfloat16, device) if fast_bf16 else float("nan")
    runners = {label: make() for label, (make, _) in paths.items()}
    fns = {label: r.logits if isinstance(r, Segmenter) else _on(r, device)
           for label, r in runners.items()}  # fmt: skip
    cases = [("batch 1, 500x500", 1, (500, 500)), ("batch 1, 360x480", 1, (360, 480))]
    if args.smoke:
        cases = [("batch 1, 64x64", 1, (64, 64)), ("batch 2, 48x64", 2, (48, 64))]
    elif device == "cuda":  # the batch that maximises images/s, of the default path
        n = best_batch(next(f for k, f in fns.items() if "default" in k), (500, 500), device)
        cases.append((f"batch {n} (best images/s), 500x500", n, (500, 500)))
    else:
        cases.append((f"batch {args.batch}, 360x480", args.batch, (360, 480)))
    rows = []
    for case, n, size in cases:
        x = camvid_batch(n, size)
        labels = {label: fn(x).argmax(1).cpu() for label, fn in fns.items()}  # also the warm-up
        ref_labels = labels[next(iter(paths))]
        flops_of = {id(m): count_flops(m, x) for m in (port, reference, efficient)}
        seconds = interleaved_seconds(fns, x, args.reps, device)
        base = seconds[next(iter(paths))]
        for label, (_, flops_model) in paths.items():
            runner, t, flops = runners[label], seconds[label], flops_of[id(flops_model)]
            low_precision = isinstance(runner, Segmenter) and runner.dtype != torch.float32
            floor = flops / (bf16_rate if low_precision else fp32_rate)
            rows.append({
                "case": case, "path": label, "ms": 1000 * t, "images_per_s": n / t,
                "speedup": base / t, "gflop": flops / 1e9, "floor_share": floor / t,
                "agreement": (labels[label] == ref_labels).double().mean().item(),
            })  # fmt: skip
            print(f"{case:>18} | {label:<48} | {1000 * t:8.1f} ms | "
                  f"{rows[-1]['speedup']:5.2f}x | {100 * rows[-1]['floor_share']:5.1f}% floor | "
                  f"agree {100 * rows[-1]['agreement']:.2f}%", flush=True)  # fmt: skip

    result = {
        "machine": {**describe(), "device": device, "cpu_bf16": cpu_has_fast_bf16()},
        "fp32_matmul_gflops": fp32_rate / 1e9, "bf16_matmul_gflops": bf16_rate / 1e9,
        "rows": rows,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def _on(model: nn.Module, device: str):
    """``model`` as a function of CPU batches, run on ``device`` under inference mode."""

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device))

    return run


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']} (flags: {' '.join(m['flags']) or 'none listed'}), "
        f"{m['threads']} threads, torch {m['torch']}, device {m['device']}; "
        f"matmul floors fp32 {result['fp32_matmul_gflops']:.0f} GFLOP/s, "
        f"bf16 {result['bf16_matmul_gflops']:.0f} GFLOP/s (nan: no native bf16).",
        "",
        "| case | path | median ms | images/s | speedup vs (a) | GFLOP | share of floor "
        "| argmax agreement |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['case']} | {r['path']} | {r['ms']:.1f} | {r['images_per_s']:.2f} | "
            f"{r['speedup']:.2f}x | {r['gflop']:.1f} | {100 * r['floor_share']:.0f}% | "
            f"{100 * r['agreement']:.2f}% |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
