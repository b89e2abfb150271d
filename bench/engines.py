"""Every engine a user would pick, on one CPU, in one run: fcnseg against its peers.

The peers run a straightforward port of FCN-8s (``inference.PortFCN8s``: pad 100, dense
transposed convolutions, as the common PyTorch ports write it) the way a user would:
eager torch, and its ONNX export in onnxruntime (fp32, int8) and OpenVINO (fp32, bf16
where the CPU has it, int8), each with its documented settings for latency (a static
shape, 2 threads, one request) and for throughput (OpenVINO's THROUGHPUT hint with its
asynchronous queue; a batch for the others). int8 is onnxruntime's static QDQ
quantization with per-channel weights, calibrated on CamVid images, the score layers in
float, for fcnseg and the peers alike. fcnseg's rows go through ``Segmenter`` as a user's
call does; ``fcnseg default`` is ``--backend auto``.

The share of the floor is the row's GFLOP/s over the best GEMM rate of any engine at
that precision, measured in the same run (``floors.py``); above 100% means the engine
computes fewer multiplications than FLOPs counted (e.g. Winograd). Agreement is the
share of pixels labelled as the port's fp32 (score layers random: the labels vary).

    python bench/engines.py --out bench/results/engines_cpu.json
    python bench/engines.py --smoke   # a tiny net: checks the bench runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from floors import GEMMS, gemm_floors
from inference import CAMVID, count_flops, interleaved_seconds, three_nets
from machine import describe
from PIL import Image
from torch import nn

from fcnseg.cli import run_reporting
from fcnseg.deploy.engines import OnnxModel
from fcnseg.deploy.export import export_onnx
from fcnseg.deploy.inference import Segmenter
from fcnseg.deploy.quantize import quantize_onnx
from fcnseg.train.checkpoint import save_checkpoint
from fcnseg.train.device import cpu_has_fast_bf16

THREADS = 2


def calibration_images(n: int) -> list[np.ndarray]:
    """``n`` CamVid training images, RGB, evenly spread (noise where the data is absent)."""
    files = sorted((CAMVID.parent / "train").glob("*.png"))
    if not files:
        return [
            np.random.default_rng(i).integers(0, 256, (360, 480, 3), np.uint8) for i in range(n)
        ]
    picked = files[:: max(1, len(files) // n)][:n]
    return [np.asarray(Image.open(f).convert("RGB")) for f in picked]


def camvid_batch(n: int, size: tuple[int, int]) -> torch.Tensor:
    from fcnseg.data.transforms import normalize_image

    images = calibration_images(n)
    return torch.stack([normalize_image(np.asarray(Image.fromarray(im).resize(size[::-1])))
                        for im in images])  # fmt: skip


class OpenVinoPeer:
    """The port's ONNX file as a user runs it in OpenVINO: compiled for one shape, with the
    LATENCY hint (one request, all threads) or THROUGHPUT (streams, an async queue of
    one image per request)."""

    def __init__(self, path: str, shape: tuple[int, ...], precision: str, hint: str) -> None:
        core = ov.Core()
        model = core.read_model(path)
        model.reshape({model.input(0).get_any_name(): [1 if hint == "throughput" else shape[0],
                                                       *shape[1:]]})  # fmt: skip
        config = {
            "PERFORMANCE_HINT": hint.upper(),
            "INFERENCE_NUM_THREADS": THREADS,
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.hint = hint
        if hint == "throughput":
            self.queue = ov.AsyncInferQueue(self.compiled)
            self.outputs: dict[int, np.ndarray] = {}
            self.queue.set_callback(self._done)
        else:
            self.request = self.compiled.create_infer_request()

    def _done(self, request, index: int) -> None:
        self.outputs[index] = request.get_output_tensor(0).data.copy()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.numpy()
        if self.hint == "latency":
            self.request.infer({0: batch})
            return torch.from_numpy(self.request.get_output_tensor(0).data.copy())
        for i in range(len(batch)):
            self.queue.start_async({0: batch[i : i + 1]}, userdata=i)
        self.queue.wait_all()
        return torch.from_numpy(np.concatenate([self.outputs[i] for i in range(len(batch))]))


def checkpoint_of(model: nn.Module, path: Path) -> Path:
    """``model`` saved as the checkpoint ``fcnseg train`` would write (weights, config)."""
    save_checkpoint({"model": model.state_dict(), "model_config": model.config.to_dict(),
                     "normalization": "imagenet"}, path)  # fmt: skip
    return path


def build_paths(args, tmp: Path, size: tuple[int, int], batch: int, hint: str) -> dict:
    """label -> (precision, runner of a normalised batch, the model whose FLOPs it computes)."""
    reference, port, efficient = three_nets(args.classes, 0.0625 if args.smoke else 1.0)
    images = calibration_images(args.calibration_images)

    port_onnx, port_int8 = str(tmp / "port.onnx"), str(tmp / "port-int8.onnx")
    export_onnx(port, port_onnx)
    quantize_onnx(port_onnx, images, "imagenet", port_int8)
    shape = (batch, 3, *size)
    bf16 = cpu_has_fast_bf16()
    paths = {"(a) port, torch eager": ("fp32", torch.inference_mode()(port), port)}
    paths["port, onnxruntime"] = ("fp32", OnnxModel(port_onnx, threads=THREADS), port)
    paths["port, onnxruntime int8"] = ("int8", OnnxModel(port_int8, threads=THREADS), port)
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        paths[f"port, OpenVINO {precision}"] = (
            precision,
            OpenVinoPeer(port_onnx, shape, precision, hint),
            port,
        )
    paths["port, OpenVINO int8"] = (
        "int8",
        OpenVinoPeer(port_int8, shape, "bf16" if bf16 else "fp32", hint),
        port,
    )

    for name, model in (("", reference), ("efficient geometry, ", efficient)):
        ckpt = checkpoint_of(model, tmp / f"fcn8s{name[:9]}.pt")
        seg = Segmenter.from_checkpoint(ckpt, batch_size=batch)
        paths[f"fcnseg {name}default ({seg.backend.backend} {seg.precision})"] = (
            seg.precision,
            seg.logits,
            model,
        )
        int8_file = tmp / f"fcnseg{name[:9]}-int8.onnx"
        _quantize(ckpt, images, int8_file)
        seg = Segmenter.from_checkpoint(int8_file, batch_size=batch)
        paths[f"fcnseg {name}int8 ({seg.backend.backend})"] = ("int8", seg.logits, model)
        if name:
            continue
        for backend, precision in (("torch", "fp32"), ("torch", "bf16"),
                                   ("onnxruntime", "fp32"), ("openvino", "fp32")):  # fmt: skip
            if precision == "bf16" and not bf16:
                continue
            seg = Segmenter.from_checkpoint(ckpt, backend=backend, precision=precision)
            paths[f"fcnseg {backend} {precision}"] = (precision, seg.logits, model)
    return paths


def _quantize(checkpoint: Path, images: list[np.ndarray], out: Path) -> None:
    from fcnseg.deploy.quantize import quantize_checkpoint

    quantize_checkpoint(checkpoint, images, out)


def run_case(args, case: str, batch: int, size: tuple[int, int], hint: str, floors: dict):
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_paths(args, Path(tmp), size, batch, hint)
        x = camvid_batch(batch, size)
        fns = {label: fn for label, (_, fn, _) in paths.items()}
        labels = {label: fn(x).argmax(1) for label, fn in fns.items()}  # and the warm-up
        ref = labels["(a) port, torch eager"]
        flops = {id(m): count_flops(m, x) for _, _, m in paths.values()}
        seconds = interleaved_seconds(fns, x, args.reps, "cpu")
    base = seconds["(a) port, torch eager"]
    rows = []
    for label, (precision, _, model) in paths.items():
        t, f = seconds[label], flops[id(model)]
        rows.append({"case": case, "path": label, "precision": precision, "ms": 1000 * t,
                     "images_per_s": batch / t, "speedup": base / t, "gflop": f / 1e9,
                     "floor_share": f / t / 1e9 / floors[precision]["gflops"],
                     "agreement": (labels[label] == ref).double().mean().item()})  # fmt: skip
        r = rows[-1]
        print(f"{case} | {label:<52} | {r['ms']:8.1f} ms | {r['speedup']:5.2f}x | "
              f"{100 * r['floor_share']:5.1f}% floor | agree {100 * r['agreement']:.2f}%",
              flush=True)  # fmt: skip
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    floors = ", ".join(f"{p} {f['gflops']:.0f} GFLOP/s ({f['engine']}, {f['size']})"
                       for p, f in result["floors"].items())  # fmt: skip
    engines = ", ".join(f"{e} {m[e]}" for e in ("onnxruntime", "openvino") if e in m)
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {THREADS} threads; flags "
        f"{' '.join(m['flags'])}; torch {m['torch']}, {engines}.",
        f"GEMM floors: {floors}.",
        "",
        "| case | path | precision | median ms | images/s | speedup vs (a) | GFLOP "
        "| share of floor | labels as (a) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['case']} | {r['path']} | {r['precision']} | {r['ms']:.1f} | "
            f"{r['images_per_s']:.2f} | {r['speedup']:.2f}x | {r['gflop']:.1f} | "
            f"{100 * r['floor_share']:.0f}% | {100 * r['agreement']:.2f}% |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/engines_cpu.json")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--calibration-images", type=int, default=16)
    parser.add_argument(
        "--cases", nargs="+", choices=("latency", "throughput"), default=["latency", "throughput"]
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny net at 64x64")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    start = time.time()
    sizes = {"conv5": GEMMS["conv5"]} if args.smoke else GEMMS
    measured = gemm_floors(threads=THREADS, reps=2 if args.smoke else args.reps, sizes=sizes)
    floors = measured["floors"]
    print("floors:", {p: round(f["gflops"]) for p, f in floors.items()}, flush=True)
    cases = [("latency, batch 1, 500x500", 1, (500, 500), "latency"),
             ("throughput, 4 images 360x480", 4, (360, 480), "throughput")]  # fmt: skip
    cases = [c for c in cases if c[3] in args.cases]
    if args.smoke:
        cases = [("latency, batch 1, 64x64", 1, (64, 64), "latency")]
    rows = [r for case in cases for r in run_case(args, *case, floors)]
    result = {"machine": describe(), "floors": floors, "gemm_rates": measured["rates"],
              "rows": rows,
              "command": "python bench/engines.py", "seconds": round(time.time() - start),
              "median_of": args.reps}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
