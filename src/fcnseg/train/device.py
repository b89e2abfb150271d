"""Where and how tensors run: the device, the precision, the memory layout."""

from __future__ import annotations

from pathlib import Path

import torch


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if available, else the CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), on Linux."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it and on CPUs with AMX/AVX512-BF16, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 inference is for GPUs; use bf16 or fp32 on a CPU")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def memory_format(channels_last: bool) -> torch.memory_format:
    """NHWC (channels-last) or the default NCHW layout."""
    return torch.channels_last if channels_last else torch.contiguous_format
