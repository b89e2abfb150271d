"""A floor that is a floor: per precision, the best GEMM rate of any engine on this CPU.

Times A @ B at FCN-8s's GEMM sizes in torch, onnxruntime and OpenVINO (the same ONNX graphs;
int8 in the QDQ form of onnxruntime's static quantization) in fp32, bf16 and int8, at fixed
threads, the engines taking turns. Each result is checked against float64 and each kernel read
back (integer for int8), so no floor comes from a wrong or a float kernel. A share of the floor
above 100% then means a cheaper algorithm (such as Winograd), not a slow floor.

    python bench/floors.py --out bench/results/floors_cpu.json
    python bench/floors.py --sizes small --reps 2   # a quick run
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import torch
from machine import describe  # bench/machine.py
from onnx import TensorProto, helper, numpy_helper

# FCN-8s (pad 100) at 500x500, batch 1, its layers as implicit GEMMs (im2col):
# M = output pixels, K = in_channels * kh * kw, N = out_channels. conv1_1's pad 100
# makes 698x698; the ceil-mode pools give 349, 175, 88, 44, 22; fc6 (7x7, valid) 16x16.
GEMMS = {
    "conv3": (175 * 175, 256 * 3 * 3, 256),  # conv3_2, conv3_3
    "conv4": (88 * 88, 512 * 3 * 3, 512),  # conv4_2, conv4_3
    "conv5": (44 * 44, 512 * 3 * 3, 512),  # conv5_1 .. conv5_3
    "fc6": (16 * 16, 512 * 7 * 7, 4096),
    "fc7": (16 * 16, 4096, 4096),
}
SIZE_SETS = {"all": tuple(GEMMS), "small": ("conv5", "fc7")}
PRECISIONS = ("fp32", "bf16", "int8")
TOLERANCE = {"fp32": 1e-3, "bf16": 2e-2, "int8": 2e-2}  # relative error (Frobenius) of A @ B
CHECKED_ROWS = 64  # rows of A @ B checked against float64: enough to catch a wrong kernel


class Unavailable(Exception):
    """An engine cannot run a precision here; the message says why."""


def operands(m: int, k: int, n: int) -> dict:
    """A (m, k) and B (k, n) in float32; their int8 quantization (A uint8 with zero point 128,
    B int8 per column, both symmetric so that A's int8 form for torch has the same values); some
    rows of A @ B in float64, of the float and of the dequantized operands, to check results."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a_scale = np.float32(2 * np.abs(a).max() / 255)
    b_scale = (np.abs(b).max(0) / 127).astype(np.float32)  # (n,)
    a_q = np.clip(np.rint(a / a_scale) + 128, 0, 255).astype(np.uint8)  # as QuantizeLinear rounds
    b_q = np.rint(b / b_scale).astype(np.int8)
    rows = np.linspace(0, m - 1, min(m, CHECKED_ROWS)).astype(int)
    exact = a[rows].astype(np.float64) @ b.astype(np.float64)
    dequantized = ((a_q[rows] - 128.0) * a_scale) @ (b_q * b_scale.astype(np.float64))
    ref = {"fp32": exact, "bf16": exact, "int8": dequantized}
    return dict(a=a, b=b, a_scale=a_scale, a_q=a_q, b_scale=b_scale, b_q=b_q, rows=rows, ref=ref)


def onnx_graph(ops: dict, precision: str) -> bytes:
    """A one-MatMul ONNX model, A (M, K) a float32 input, B an initializer, Y (M, N) float32.

    bf16 casts A and B to bfloat16 around the MatMul; int8 is QDQ: A through
    QuantizeLinear/DequantizeLinear, B int8 with a per-column DequantizeLinear.
    """
    (m, k), n = ops["a"].shape, ops["b"].shape[1]
    if precision == "int8":
        values = {"a_scale": np.array(ops["a_scale"]), "a_zero": np.array(128, np.uint8)}
        values |= {"b_q": ops["b_q"], "b_scale": ops["b_scale"], "b_zero": np.zeros(n, np.int8)}
        init = [numpy_helper.from_array(v, name) for name, v in values.items()]
        nodes = [
            helper.make_node("QuantizeLinear", ["A", "a_scale", "a_zero"], ["A_q"]),
            helper.make_node("DequantizeLinear", ["A_q", "a_scale", "a_zero"], ["A_dq"]),
            helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["B"], axis=1),
            helper.make_node("MatMul", ["A_dq", "B"], ["Y"]),
        ]
    elif precision == "bf16":
        init = [numpy_helper.from_array(ops["b"], "B32")]
        nodes = [
            helper.make_node("Cast", ["A"], ["A16"], to=TensorProto.BFLOAT16),
            helper.make_node("Cast", ["B32"], ["B16"], to=TensorProto.BFLOAT16),
            helper.make_node("MatMul", ["A16", "B16"], ["Y16"]),
            helper.make_node("Cast", ["Y16"], ["Y"], to=TensorProto.FLOAT),
        ]
    else:
        init = [numpy_helper.from_array(ops["b"], "B")]
        nodes = [helper.make_node("MatMul", ["A", "B"], ["Y"])]
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])
    graph = helper.make_graph(nodes, f"matmul_{precision}", [a], [y], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def torch_runner(ops: dict, precision: str, threads: int) -> tuple:
    """torch.matmul (fp32, bf16) or torch._int_mm (int8 x int8 -> int32, then scaled to float)."""
    a, b = torch.from_numpy(ops["a"]), torch.from_numpy(ops["b"])
    if precision == "int8":
        a8 = torch.from_numpy((ops["a_q"].astype(np.int16) - 128).astype(np.int8))
        b8, scale = torch.from_numpy(ops["b_q"]), torch.from_numpy(ops["a_scale"] * ops["b_scale"])
        return (lambda: torch._int_mm(a8, b8) * scale), "torch._int_mm"
    if precision == "bf16":
        a, b = a.bfloat16(), b.bfloat16()
    return (lambda: torch.matmul(a, b)), "torch.matmul"


def ort_runner(ops: dict, precision: str, threads: int) -> tuple:
    """An onnxruntime CPU session; its kernels read from a profile of the first run."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle workers would spin into the next engine's turn.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        graph = onnx_graph(ops, precision)
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        session.run(None, {"A": ops["a"]})
        events = json.loads(Path(session.end_profiling()).read_text())  # profiling stops here
    kernels = sorted({e["args"]["op_name"] for e in events if e.get("cat") == "Node"})
    if precision == "int8" and not any("Integer" in k or k.startswith("QLinear") for k in kernels):
        raise Unavailable(f"the QDQ graph ran as {kernels}, no integer matmul")
    return (lambda: session.run(None, {"A": ops["a"]})[0]), "+".join(kernels)


def openvino_runner(ops: dict, precision: str, threads: int) -> tuple:
    """OpenVINO on the CPU: bf16 is the fp32 graph with the bf16 hint; its matmul's runtime
    precision and primitive are read from the compiled model."""
    if precision == "bf16" and not {"avx512_bf16", "amx_bf16"} & set(describe()["flags"]):
        raise Unavailable("no avx512_bf16 or amx_bf16: OpenVINO would run bf16 emulated or as f32")
    core = ov.Core()
    model = core.read_model(onnx_graph(ops, "int8" if precision == "int8" else "fp32"), b"")
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})  # fmt: skip
    info = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()]
    matmuls = [(i["runtimePrecision"].astype(str), i["primitiveType"].astype(str)) for i in info
               if i["layerType"].astype(str) in ("FullyConnected", "MatMul")]  # fmt: skip
    ran = {p for p, _ in matmuls}
    wanted = {"fp32": {"f32"}, "bf16": {"bf16"}, "int8": {"u8", "i8"}}[precision]
    if not ran <= wanted:
        raise Unavailable(f"the matmul was compiled to run in {sorted(ran)}")
    request = compiled.create_infer_request()
    run = lambda: request.infer({0: ops["a"]}, share_inputs=True, share_outputs=True)[0]  # noqa: E731
    return run, "+".join(f"{p} {kernel}" for p, kernel in matmuls)


ENGINES = {"torch": torch_runner, "onnxruntime": ort_runner, "openvino": openvino_runner}


def gemm_floors(threads: int = 2, reps: int = 5, sizes: dict = GEMMS) -> dict:
    """Each engine's GEMM rate per precision and size, and per precision the best (the floor).

    Args:
        threads: threads of every engine (torch's are restored afterwards).
        reps: timed calls per engine and size, after one warm-up call; the median counts.
        sizes: name -> (M, K, N).

    Returns:
        {"rates": [{engine, precision, size_name, M, K, N, gflops, ms, kernel}],
         "floors": {precision: {gflops, engine, size}}, "not_available": [{engine, precision, why}]}
    """
    rates, unavailable, torch_threads = [], {}, torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for size_name, (m, k, n) in sizes.items():
            ops, runners = operands(m, k, n), {}
            rows = ops["rows"]
            for precision in PRECISIONS:
                ref = ops["ref"][precision]
                for engine, make in ENGINES.items():
                    if (engine, precision) in unavailable:
                        continue
                    # An engine that cannot run a precision raises; its message is the reason.
                    try:
                        fn, kernel = make(ops, precision, threads)
                        y = fn()  # also the warm-up
                        y = y.float().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
                        err = np.linalg.norm(y[rows] - ref) / np.linalg.norm(ref)
                    except Exception as e:
                        why = f"{type(e).__name__}: {str(e).strip()[:300]}"
                    else:
                        if err <= TOLERANCE[precision]:
                            runners[engine, precision] = fn, kernel
                            continue
                        why = f"wrong result at {size_name}: relative error {err:.1e}"
                    unavailable[engine, precision] = why
            times = {key: [] for key in runners}
            for _ in range(reps):
                for key, (fn, _) in runners.items():
                    t = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t)
            for (engine, precision), ts in times.items():
                s = statistics.median(ts)
                rates.append(
                    {"engine": engine, "precision": precision, "size_name": size_name}
                    | {"M": m, "K": k, "N": n, "gflops": 2 * m * k * n / s / 1e9, "ms": 1000 * s}
                    | {"kernel": runners[engine, precision][1]}
                )
            del runners, ops  # the next size's operands and sessions need the memory
    finally:
        torch.set_num_threads(torch_threads)
    best = {r["precision"]: r for r in sorted(rates, key=lambda r: r["gflops"])}  # the best last
    floors = {p: {"gflops": best[p]["gflops"], "engine": best[p]["engine"],
                  "size": best[p]["size_name"]} for p in PRECISIONS if p in best}  # fmt: skip
    not_available = [{"engine": e, "precision": p, "why": w} for (e, p), w in unavailable.items()]
    return {"rates": rates, "floors": floors, "not_available": not_available}


def markdown(result: dict, sizes: list[str]) -> str:
    """One row per engine and precision, GFLOP/s per size; the floors and what was n/a below."""
    lines = [f"| precision | engine | kernel | {' | '.join(sizes)} |"]
    lines.append("|---|---|---|" + "---:|" * len(sizes))
    cells = {(r["precision"], r["engine"], r["size_name"]): r for r in result["rates"]}
    for precision, engine in itertools.product(PRECISIONS, ENGINES):
        found = [cells.get((precision, engine, s)) for s in sizes]
        if any(found):
            kernel = next(r["kernel"] for r in found if r)
            rates = " | ".join(f"{r['gflops']:.0f}" if r else "n/a" for r in found)
            lines.append(f"| {precision} | {engine} | {kernel} | {rates} |")
    lines.append("")
    for precision, f in result["floors"].items():
        lines.append(f"- floor {precision}: {f['gflops']:.0f} GFLOP/s ({f['engine']}, {f['size']})")
    lines += [f"- n/a: {u['engine']} {u['precision']}: {u['why']}" for u in result["not_available"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    choices = f"{' or '.join(SIZE_SETS)}, or some of {','.join(GEMMS)} (comma-separated)"
    parser.add_argument("--sizes", default="all", help=choices)
    parser.add_argument("--out", type=Path, default=Path("bench/results/floors_cpu.json"))
    args = parser.parse_args()
    names = SIZE_SETS.get(args.sizes) or args.sizes.split(",")
    if unknown := [s for s in names if s not in GEMMS]:
        parser.error(f"unknown sizes {unknown}: choose {choices}")
    result = gemm_floors(args.threads, args.reps, {s: GEMMS[s] for s in names})
    machine = describe() | {"threads": args.threads}
    versions = ", ".join(f"{e} {machine[e]}" for e in ENGINES if e in machine)
    print(f"{machine['cpu']} ({', '.join(machine['flags'])}); {versions}")
    print(f"GEMM GFLOP/s, {args.threads} threads, median of {args.reps}\n")
    print(markdown(result, list(names)))
    load = round(os.getloadavg()[0], 1)  # other jobs on the machine
    report = {"machine": machine, "reps": args.reps, "load_average_1min": load}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report | result, indent=1) + "\n")


if __name__ == "__main__":
    main()
