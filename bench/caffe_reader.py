"""How long a full-size caffemodel takes to read and to convert, without Caffe.

    python bench/caffe_reader.py   # writes bench/results/caffe_reader.json

Writes a synthetic caffemodel as large as the reference's FCN-8s (VGG16 widths, 21
classes: about 540 MB) into a temporary folder: random float32 weights, bilinear
deconvolutions, packed as Caffe writes them, by a hand encoder of the protobuf wire
format. Then times, each once with the file's pages dropped from the OS cache
(``posix_fadvise(DONTNEED)``: a first read from disk) and once with them cached:

- ``read``: :func:`fcnseg.nets.caffemodel.read_caffemodel`;
- ``convert``: ``fcnseg convert-caffe FILE --model voc-fcn8s -o OUT`` (read, check every
  layer, build the model, load it, hash the file, write the checkpoint).

and checks that the converted weights are those written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe

from fcnseg.cli import main as fcnseg_main
from fcnseg.cli import run_reporting
from fcnseg.nets.caffe_names import REFERENCE_NAMES
from fcnseg.nets.caffemodel import read_caffemodel
from fcnseg.nets.registry import build_model
from fcnseg.nets.upsample import bilinear_kernel
from fcnseg.train.checkpoint import load_checkpoint


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def length_field(number: int, size: int) -> bytes:
    """The header of a length-delimited field (wire type 2) of ``size`` bytes."""
    return varint(number << 3 | 2) + varint(size)


def blob_parts(array: np.ndarray) -> list[bytes | memoryview]:
    """BlobProto: shape (7) with packed dims (1), packed float data (5)."""
    dims = b"".join(varint(d) for d in array.shape)
    shape = length_field(1, len(dims)) + dims
    data = memoryview(np.ascontiguousarray(array, "<f4")).cast("B")
    return [length_field(7, len(shape)) + shape, length_field(5, len(data)), data]


def layer_parts(name: str, kind: str, blobs: list[np.ndarray]) -> list[bytes | memoryview]:
    """LayerParameter: name (1), type (2), blobs (7)."""
    parts = [length_field(1, len(name)) + name.encode(), length_field(2, len(kind)) + kind.encode()]
    for array in blobs:
        inner = blob_parts(array)
        parts += [length_field(7, sum(len(p) for p in inner)), *inner]
    return parts


def write_fcn8s(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The reference FCN-8s's layers with random weights, streamed to ``path``; returns
    fcnseg key -> the array written."""
    rng = np.random.default_rng(seed)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_model("fcn8s", 21).state_dict().items()}
    written = {}
    with open(path, "wb") as f:
        for caffe, module in REFERENCE_NAMES["fcn8s"].items():
            if f"{module}.weight" in shapes:
                blobs = [rng.standard_normal(shapes[f"{module}.{p}"], np.float32)
                         for p in ("weight", "bias")]  # fmt: skip
                written |= {f"{module}.weight": blobs[0], f"{module}.bias": blobs[1]}
                kind = "Convolution"
            else:  # a fixed upsampling: the dense, diagonal bilinear kernel
                size = {"upscore2": 4, "upscore_pool4": 4, "upscore8": 16}[caffe]
                blob = np.zeros((21, 21, size, size), np.float32)
                blob[range(21), range(21)] = bilinear_kernel(size).numpy()
                blobs, kind = [blob], "Deconvolution"
            parts = layer_parts(caffe, kind, blobs)
            f.write(length_field(100, sum(len(p) for p in parts)))
            for part in parts:
                f.write(part)
        f.flush()
        os.fsync(f.fileno())
    return written


def drop_cache(path: Path) -> None:
    """Evict the file's pages from the OS cache (this file only), so the next read hits disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(func) -> float:
    tic = time.perf_counter()
    func()
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/caffe_reader.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, converted = Path(tmp) / "fcn8s-heavy-pascal.caffemodel", Path(tmp) / "voc-fcn8s.pt"
        tic = time.perf_counter()
        written = write_fcn8s(path)
        write_s = time.perf_counter() - tic
        size = path.stat().st_size
        convert = ["convert-caffe", str(path), "--model", "voc-fcn8s", "-o", str(converted),
                   "--overwrite"]  # fmt: skip
        seconds = {}
        for cache in ("cold", "warm"):
            if cache == "cold":
                drop_cache(path)
            seconds[f"read_{cache}"] = timed(lambda: read_caffemodel(path))
            if cache == "cold":
                drop_cache(path)
            seconds[f"convert_{cache}"] = timed(lambda: fcnseg_main(convert))
        state = load_checkpoint(converted)["model"]
        assert all(np.array_equal(state[k].numpy(), v) for k, v in written.items())
    result = {
        "file": "synthetic FCN-8s caffemodel (VGG16 widths, 21 classes, packed float32)",
        "bytes": size,
        "write_s": round(write_s, 2),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "read_mb_per_s_cold": round(size / 1e6 / seconds["read_cold"]),
        "weights_equal": True,
        "command": "python bench/caffe_reader.py",
        "load_average_1min": round(os.getloadavg()[0], 1),  # other jobs on the machine
        "machine": describe(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
