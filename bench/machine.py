"""What a bench ran on: the CPU, the flags that decide its speed, the engines' versions."""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
from pathlib import Path

import torch

from fcnseg.train.device import cpu_flags

# The instruction sets that decide which kernels run (fp32 / bf16 / int8 dot products).
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
ENGINES = ("onnxruntime", "openvino")  # the other engines a bench may time, where installed


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def describe() -> dict:
    """The CPU's name and relevant flags, torch's threads, the versions of torch, Python and
    the other engines installed."""
    versions = {}
    for name in ENGINES:
        with contextlib.suppress(ImportError):
            versions[name] = importlib.import_module(name).__version__
    flags = cpu_flags()
    return {
        "cpu": _cpuinfo().get("model name") or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "flags": [f for f in FLAGS if f in flags],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **versions,
    }


if __name__ == "__main__":
    print(describe())
