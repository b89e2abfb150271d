"""Where and how tensors run: the device, the precision, the memory layout."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

from fcnseg.errors import ConfigError, FcnsegWarning

CPUINFO = Path("/proc/cpuinfo")
"""Where Linux lists the CPU's instruction-set flags (read by :func:`cpu_flags`)."""


def available_devices() -> list[str]:
    """The devices this process can use, as ``--device`` spells them: ``cpu``, ``cuda:0``, ..."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def select_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA if available, else the CPU; else ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ConfigError: an unknown device name, or one this machine does not have.

    Example:
        >>> select_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"--device {name}: unknown device; choose auto, cpu, cuda, cuda:N or mps "
            f"(this machine has {here})"
        )
    if not _exists(device):
        raise ConfigError(f"--device {name}: not available on this machine, which has {here}")
    return device


def _exists(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available() and device.index in (None, 0)
    return True  # the CPU


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""CPU flags of native bf16 arithmetic (Linux's names)."""


def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags (``avx2``, ``avx512_bf16``, ``amx_int8``, ...), as
    :data:`CPUINFO` lists them; empty where it cannot be read (not Linux)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    return frozenset(
        flag
        for line in text.splitlines()
        if line.startswith("flags")
        for flag in line.partition(":")[2].split()
    )


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), as :data:`CPUINFO` says.

    False where it cannot be read (not Linux).
    """
    return bool(cpu_flags() & BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it and on CPUs with AMX/AVX512-BF16, else fp32.

    Raises:
        ConfigError: an unknown precision, or fp16 on a CPU.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"--precision {precision}: unknown; choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16: half precision is for GPUs; use bf16 or fp32 on a CPU")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class EmulatedBf16Warning(FcnsegWarning):
    """bf16 asked for on a CPU that emulates it (see :func:`warn_emulated_bf16`)."""


def warn_emulated_bf16(dtype: torch.dtype, device: torch.device) -> bool:
    """Warn (:class:`EmulatedBf16Warning`) when ``dtype`` is bf16 on a CPU without native
    bf16 arithmetic: it is emulated there and runs many times slower than fp32 (about 10x
    for the CamVid recipe's training on an AVX2-only EPYC, ``bench/train_throughput.py``).

    Returns:
        Whether it warned.
    """
    if dtype != torch.bfloat16 or device.type != "cpu" or cpu_has_fast_bf16():
        return False
    warnings.warn(
        "--precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so it is "
        "emulated and runs many times slower than fp32; --precision auto picks fp32 here",
        EmulatedBf16Warning,
        stacklevel=_first_frame_outside_fcnseg(),
    )
    return True


def _first_frame_outside_fcnseg() -> int:
    """The ``stacklevel`` (counted from its caller) of the first frame outside this package:
    a warning points at the user's line that asked, not at fcnseg's own calls."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1  # our caller, who warns: stacklevel 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def memory_format(channels_last: bool) -> torch.memory_format:
    """NHWC (channels-last) or the default NCHW layout."""
    return torch.channels_last if channels_last else torch.contiguous_format
