"""``--backend auto``: the engine and precision an FCN runs fastest with on this machine,
chosen from the CPU's instruction-set flags and the installed engines, never from a
timing at start-up (the table below; ``bench/engines.py`` measures it).

========================  ==========================================  ===========
CPU                        auto (first installed)                      precision
========================  ==========================================  ===========
AMX-BF16 or AVX512-BF16   openvino, then torch                         bf16
any other x86-64 (AVX2)   onnxruntime, then openvino, then torch       fp32
an int8 model file        openvino, then onnxruntime                   int8
a GPU (``--device``)      torch                                        bf16 / fp16
========================  ==========================================  ===========

``--precision fp32`` on a bf16 CPU takes the fp32 row. Nets that the ONNX export does not
cover (more than 3 input channels: NYUDv2's colour + depth or HHA; SIFT Flow's two heads)
and ``--compile`` run on torch. Labels: fp32 engines equal torch's fp32 logits to 1e-4;
bf16 keeps >= 99.5% of the labels (``bench/precision.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from fcnseg.errors import ConfigError
from fcnseg.train.device import BF16_FLAGS

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
BACKEND_ENV = "FCNSEG_BACKEND"
"""The environment variable that sets ``--backend``'s default (else ``auto``)."""
AUTO_ORDER = {
    "bf16": ("openvino", "torch"),
    "fp32": ("onnxruntime", "openvino", "torch"),
    "int8": ("openvino", "onnxruntime"),
}
"""Per precision, the engines ``auto`` takes, fastest first (``bench/engines.py``)."""


@dataclass(frozen=True)
class BackendChoice:
    """An engine (``torch``, ``onnxruntime`` or ``openvino``), the precision it computes in
    (``fp32``, ``bf16``, ``fp16`` or ``int8``), and why, in words."""

    backend: str
    precision: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backend} {self.precision} ({self.reason})"


def default_backend() -> str:
    """``$FCNSEG_BACKEND`` if set, else ``auto``.

    Raises:
        ConfigError: the variable names no backend.
    """
    value = os.environ.get(BACKEND_ENV, "auto")
    if value not in BACKENDS:
        raise ConfigError(f"${BACKEND_ENV}={value!r}: choose one of {', '.join(BACKENDS)}")
    return value


def choose_backend(
    backend: str,
    precision: str,
    *,
    device: torch.device,
    flags: frozenset[str],
    installed: tuple[str, ...],
    int8: bool = False,
    exportable: bool = True,
    compile: bool = False,
) -> BackendChoice:
    """The engine and precision to run with (see the module's table).

    Args:
        backend: ``auto`` or an engine of :data:`BACKENDS`.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (``--precision``).
        device: where the torch model would run; engines run on the CPU.
        flags: the CPU's flags (:func:`fcnseg.train.device.cpu_flags`).
        installed: the engines whose package is installed
            (:func:`fcnseg.deploy.engines.installed_engines`).
        int8: the model is an int8 ONNX file (``fcnseg quantize``), with no torch weights.
        exportable: the net can be exported to ONNX.
        compile: ``--compile`` (torch only).

    Raises:
        ConfigError: the combination cannot run (named in the message).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend}: unknown; choose one of {', '.join(BACKENDS)}")
    native_bf16 = bool(flags & BF16_FLAGS)
    if int8:
        return _int8_choice(backend, precision, device, compile, installed)
    if backend == "auto":
        if device.type != "cpu" or not exportable or compile:
            why = "a GPU" if device.type != "cpu" else "--compile" if compile else "not exportable"
            return BackendChoice("torch", precision, f"auto: {why}")
        want = precision if precision != "auto" else float_precision(flags)
        if want not in AUTO_ORDER:
            raise ConfigError(f"--precision {precision}: on a CPU choose auto, fp32 or bf16")
        # Without native bf16 OpenVINO would quietly compute fp32; torch emulates bf16 (and warns)
        order = AUTO_ORDER[want] if want != "bf16" or native_bf16 else ("torch",)
        engine = next(e for e in order if e == "torch" or e in installed)
        cpu = "AMX/AVX512-BF16 CPU" if native_bf16 else "CPU without native bf16"
        return BackendChoice(engine, want, f"auto: {cpu}, {_installed(installed)}")
    if backend == "torch":
        return BackendChoice("torch", precision, "asked")
    if device.type != "cpu":
        raise ConfigError(f"--backend {backend} runs on the CPU; give --device cpu")
    if not exportable:
        raise ConfigError(
            f"--backend {backend}: this net is not exported to ONNX (more than 3 input "
            "channels, or several heads); use --backend torch"
        )
    if compile:
        raise ConfigError("--compile is torch's: give it with --backend torch (or auto)")
    if backend == "onnxruntime" and precision not in ("auto", "fp32"):
        raise ConfigError(f"--precision {precision}: the onnxruntime backend runs in fp32")
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"--precision {precision}: OpenVINO on a CPU runs fp32 or bf16")
    if precision == "bf16" and not native_bf16:
        # OpenVINO would quietly compute in fp32 where the CPU has no bf16 arithmetic.
        raise ConfigError("--precision bf16: this CPU has no AMX or AVX512-BF16; use fp32")
    want = "fp32" if backend == "onnxruntime" else precision
    if want == "auto":
        want = float_precision(flags)
    return BackendChoice(backend, want, "asked")


def _int8_choice(
    backend: str, precision: str, device: torch.device, compile: bool, installed: tuple[str, ...]
) -> BackendChoice:
    if backend == "torch":
        raise ConfigError(
            "--backend torch: an int8 model file runs on onnxruntime or openvino (or auto)"
        )
    if device.type != "cpu":
        raise ConfigError("--device: an int8 model file runs on the CPU; give --device cpu")
    if compile:
        raise ConfigError("--compile is torch's: an int8 model file runs on an engine")
    if precision not in ("auto", "int8"):
        raise ConfigError(f"--precision {precision}: an int8 model file runs in int8")
    if backend != "auto":
        return BackendChoice(backend, "int8", "asked")
    engines = [e for e in AUTO_ORDER["int8"] if e in installed]
    # Neither installed: the first one's constructor names the package to install.
    engine = (engines or AUTO_ORDER["int8"])[0]
    return BackendChoice(engine, "int8", f"auto: {_installed(installed)}")


def _installed(installed: tuple[str, ...]) -> str:
    return f"{' and '.join(installed)} installed" if installed else "no engine installed"


def float_precision(flags: frozenset[str]) -> str:
    """What float layers compute in by default: bf16 where the CPU has it natively."""
    return "bf16" if flags & BF16_FLAGS else "fp32"
