"""Load on ``fcnseg serve`` over loopback: throughput, latency, batching, and that bad
input never costs a 5xx or a connection.

Starts ``fcnseg serve`` on 127.0.0.1 (a tiny synthetic-demo model trained here, or
``--checkpoint``), then sends ``--requests`` requests from ``--concurrency`` clients
at once: images of mixed sizes as raw bodies and multipart uploads, PNG and JSON
answers, and every ``--malformed-every``-th request malformed (not an image,
truncated, over the body or pixel limit, empty, no file part, unknown format, path
or method). Every answer is checked: good ones against the labels of the same model
run here on the same bytes, bad ones against the status they must get.

    python bench/serve_load.py --out bench/results/serve_load.json

tests/serve/test_load.py runs the same code at a smaller size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import numpy as np
from PIL import Image

from fcnseg.cli import run_reporting
from fcnseg.data.images import read_image
from fcnseg.data.synthetic import make_scene
from fcnseg.deploy.inference import Segmenter

BENCH_SIZES = ((240, 320), (320, 240), (256, 256), (200, 300))
"""(height, width) of the good images, in turn."""

TINY_TRAIN = ["--recipe", "synthetic-demo", "--width", "0.0625", "--crop", "64", "--batch-size",
              "4", "--iterations", "60", "--warmup", "0", "--eval-every", "60",
              "--quiet"]  # fmt: skip
"""``fcnseg train`` flags of the bench's own model: about two minutes on two busy CPU
cores, enough for it to tell shapes from background (so the labels checked vary)."""

SERVER_FLAGS = ["--precision", "fp32", "--device", "cpu", "--max-body-mb", "1"]
"""How the bench serves, and computes its reference labels (the same precision)."""


@dataclass(frozen=True)
class Case:
    """One request to send and what must come back."""

    kind: str
    method: str
    path: str
    status: int
    content: bytes | None = None
    files: dict | None = None
    headers: dict | None = None
    image: int | None = None  # index of a good image: its answer is checked against labels


@dataclass
class Outcome:
    case: Case
    status: int | None  # None: the connection broke
    seconds: float
    correct: bool


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with four bytes of
    pixel data: a decompression bomb's header in 60 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(4))


def good_images(sizes, per_size: int = 2, seed: int = 0) -> list[bytes]:
    """Synthetic scenes (:func:`fcnseg.data.synthetic.make_scene`) resized to each
    size, ``per_size`` of each, PNG and JPEG in turn."""
    images = []
    for i in range(per_size):
        for j, (height, width) in enumerate(sizes):
            scene, _ = make_scene(seed, i * len(sizes) + j)
            array = np.asarray(Image.fromarray(scene).resize((width, height)))
            images.append(encode(array, "PNG" if i % 2 == 0 else "JPEG"))
    return images


def reference_labels(checkpoint: str | os.PathLike, images: list[bytes]) -> list[np.ndarray]:
    """Each image's labels from the model run here, one image at a time, read as
    ``fcnseg predict`` reads files."""
    segmenter = Segmenter.from_checkpoint(checkpoint, precision="fp32", device="cpu")
    labels = []
    with tempfile.TemporaryDirectory() as folder:
        for i, data in enumerate(images):
            path = Path(folder) / f"{i}.img"
            path.write_bytes(data)
            labels.append(segmenter.predict(read_image(path))[0])
    return labels


def malformed_cases(sample: bytes, max_body_bytes: int, max_pixels: int, **limits) -> list[Case]:
    """One request of each bad kind for a server with these limits (``GET /v1/model``'s),
    with the status it must get; ``sample`` is a good image."""
    side = int(max_pixels**0.5) + 1
    segment = "/v1/segment"
    return [
        Case("not an image", "POST", segment, 415, content=b"hello, server"),
        Case("truncated", "POST", segment, 400, content=sample[: len(sample) // 2]),
        Case("body over the limit", "POST", segment, 413, content=bytes(max_body_bytes + 1)),
        Case("pixel bomb", "POST", segment, 413, content=png_declaring(side, side)),
        Case("empty body", "POST", segment, 400, content=b""),
        Case("no file part", "POST", segment, 400, files={"note": (None, "no image here")}),
        Case("unknown format", "POST", segment + "?format=tiff", 400, content=sample),
        Case("unknown path", "POST", "/v1/segmentation", 404, content=sample),
        Case("wrong method", "GET", segment, 405),
    ]


def plan(requests: int, malformed_every: int, images: list[bytes], bad: list[Case]) -> list[Case]:
    """The requests in order: every ``malformed_every``-th one bad (each kind in turn);
    good ones cycle over the images, raw or multipart, PNG or JSON answers."""
    cases, good, n_bad = [], 0, 0
    for i in range(requests):
        if malformed_every and i % malformed_every == malformed_every - 1:
            cases.append(bad[n_bad % len(bad)])
            n_bad += 1
            continue
        index, style = good % len(images), good % 4
        answer = "/v1/segment?format=json" if style >= 2 else "/v1/segment"
        body = {"files": {"image": (f"{index}.img", images[index])}} if style % 2 else {
            "content": images[index]}  # fmt: skip
        cases.append(Case("good", "POST", answer, 200, image=index, **body))
        good += 1
    return cases


def is_correct(case: Case, response: httpx2.Response, labels: list[np.ndarray]) -> bool:
    """The status is the one expected; a good answer holds the reference labels."""
    if response.status_code != case.status:
        return False
    if case.image is None:
        return "error" in response.json()
    expected = labels[case.image]
    if "format=json" in case.path:
        result = response.json()
        counts = np.bincount(expected.ravel(), minlength=len(result["classes"]))
        size_ok = (result["height"], result["width"]) == expected.shape
        return size_ok and [c["pixels"] for c in result["classes"]] == counts.tolist()
    label = np.asarray(Image.open(io.BytesIO(response.content)))
    return label.shape == expected.shape and bool((label == expected).all())


async def send_all(url: str, cases: list[Case], concurrency: int, labels) -> list[Outcome]:
    """Send ``cases`` from ``concurrency`` clients at once, each on its own connection."""
    outcomes: list[Outcome | None] = [None] * len(cases)
    queue = iter(range(len(cases)))
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx2.AsyncClient) -> None:
        for i in queue:  # shared: each index is taken once
            case = cases[i]
            tic = time.perf_counter()
            try:
                response = await client.request(case.method, url + case.path,
                                                 content=case.content, files=case.files,
                                                 headers=case.headers)  # fmt: skip
                status = response.status_code
                correct = is_correct(case, response, labels)
            except httpx2.TransportError:
                status, correct = None, False
            outcomes[i] = Outcome(case, status, time.perf_counter() - tic, correct)

    async with httpx2.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return outcomes


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)} | {
        "max": round(float(ms.max()), 1)}  # fmt: skip


def metric(text: str, name: str) -> float:
    """A sample without labels from Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def scrape_workers(url: str, workers: int) -> dict[str, str]:
    """``/metrics`` of each worker process, by pid: each new connection reaches one
    of them, so scrape until all have answered."""
    texts, deadline = {}, time.monotonic() + 60  # a worker may still be loading its model
    while time.monotonic() < deadline:
        text = httpx2.get(url + "/metrics").text
        pid = re.search(r'^fcnseg_worker_info\{pid="(\d+)"\}', text, re.M).group(1)
        texts[pid] = text
        if len(texts) == workers:
            return texts
        time.sleep(0.01)
    raise RuntimeError(f"only {len(texts)} of {workers} workers answered /metrics")


def batches(url: str, workers: int) -> tuple[float, float]:
    """(forward passes, images) so far, summed over the workers' metrics."""
    texts = scrape_workers(url, workers).values()
    return (sum(metric(t, "fcnseg_batch_size_count") for t in texts),
            sum(metric(t, "fcnseg_batch_size_sum") for t in texts))  # fmt: skip


def summarize(outcomes: list[Outcome], wall_s: float, before, after, healthy: bool) -> dict:
    statuses = Counter(str(o.status) for o in outcomes)
    good = [o for o in outcomes if o.case.image is not None]
    passes, images = after[0] - before[0], after[1] - before[1]
    return {
        "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(outcomes) / wall_s, 1),
        "latency_ms": percentiles([o.seconds for o in outcomes]),
        "good_latency_ms": percentiles([o.seconds for o in good]),
        "statuses": dict(sorted(statuses.items())),
        "server_errors_5xx": sum(o.status is not None and o.status >= 500 for o in outcomes),
        "dropped_connections": statuses.get("None", 0),
        "wrong_answers": sum(not o.correct for o in outcomes),
        "wrong_by_kind": dict(Counter(o.case.kind for o in outcomes if not o.correct)),
        "forward_passes": int(passes),
        "mean_batch_size": round(images / passes, 2) if passes else None,
        "healthy_after": healthy,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fcnseg_serve(checkpoint, flags: list[str], log: Path) -> Iterator[str]:
    """``fcnseg serve CHECKPOINT FLAGS`` on 127.0.0.1 (a free port), ready: its URL.
    Stopped with Ctrl-C (SIGINT) at the end, which must end it cleanly."""
    port = free_port()
    command = [sys.executable, "-m", "fcnseg", "serve", str(checkpoint), "--port", str(port),
               *flags]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not _ready(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fcnseg serve did not start:\n{log.read_text()}")
                time.sleep(0.2)
            yield url
        finally:
            server.send_signal(signal.SIGINT)
            code = server.wait(60)
    if code != 0:
        raise RuntimeError(f"fcnseg serve exited with {code}:\n{log.read_text()}")


def _ready(url: str) -> bool:
    try:
        return httpx2.get(url + "/readyz", timeout=5).status_code == 200
    except httpx2.TransportError:
        return False


def healthy(url: str, workers: int) -> bool:
    """Alive, ready, and nothing left in any worker's queue."""
    ok = all(httpx2.get(url + p).status_code == 200 for p in ("/healthz", "/readyz"))
    texts = scrape_workers(url, workers).values()
    return ok and all(metric(t, "fcnseg_queue_depth") == 0 for t in texts)


def run_load(url: str, cases: list[Case], concurrency: int, labels, workers: int = 1) -> dict:
    """Send the cases against a ready server of ``workers`` processes; the summary
    (:func:`summarize`)."""
    before = batches(url, workers)
    tic = time.perf_counter()
    outcomes = asyncio.run(send_all(url, cases, concurrency, labels))
    wall = time.perf_counter() - tic
    return summarize(outcomes, wall, before, batches(url, workers), healthy(url, workers))


def train_tiny(folder: Path) -> Path:
    from fcnseg.cli import main

    assert main(["train", *TINY_TRAIN, "--out", str(folder / "run")]) == 0
    return folder / "run" / "best.pt"


def machine() -> dict:
    """The CPU, its flags that matter for speed, and the versions that ran."""
    import fastapi
    import torch
    import uvicorn

    flags, name = set(), platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    return {"cpu": name, "cores": len(os.sched_getaffinity(0)),
            "flags": [f for f in wanted if f in flags], "torch": torch.__version__,
            "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
            "python": platform.python_version()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="default: a tiny synthetic-demo model trained here")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--malformed-every", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="fcnseg serve --workers")
    parser.add_argument("--threads", type=int, help="fcnseg serve --threads")
    parser.add_argument("--out", default="bench/results/serve_load.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or train_tiny(Path(tmp))
        images = good_images(BENCH_SIZES)
        labels = reference_labels(checkpoint, images)
        flags = [*SERVER_FLAGS, "--workers", str(args.workers)]
        flags += ["--threads", str(args.threads)] if args.threads else []
        with fcnseg_serve(checkpoint, flags, Path(tmp) / "serve.log") as url:
            model = httpx2.get(url + "/v1/model").json()
            bad = malformed_cases(images[0], **model["limits"])
            cases = plan(args.requests, args.malformed_every, images, bad)
            results = run_load(url, cases, args.concurrency, labels, args.workers)
    report = {
        "command": "python bench/serve_load.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "server": {"flags": flags, "model": model["model"], "checkpoint": args.checkpoint
                   or "tiny synthetic-demo (" + " ".join(TINY_TRAIN[2:-1]) + ")",
                   "precision": model["precision"], "limits": model["limits"]},
        "load": {"requests": args.requests, "concurrency": args.concurrency,
                 "malformed_every": args.malformed_every,
                 "sizes": [f"{h}x{w}" for h, w in BENCH_SIZES],
                 "classes_in_reference_labels": sorted({int(c) for lab in labels
                                                        for c in np.unique(lab)})},
        "results": results,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"], indent=2))


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
