"""Engines that run an exported FCN (an ONNX file) on a CPU, called like the torch model.

Each is a :class:`torch.nn.Module` whose ``forward`` takes a (N, 3, H, W) float tensor and
returns (N, C, H, W) float32 logits, so :func:`fcnseg.train.engine.evaluate`, the
test-time augmentation and :class:`~fcnseg.deploy.inference.Segmenter` use it as they use
the net itself. Which engine ``--backend auto`` picks: :mod:`fcnseg.deploy.backend`.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fcnseg.errors import ConfigError, UserError

ENGINE_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
"""The PyPI package each engine needs (both come with ``pip install 'fcnseg[cpu]'``)."""
PRECISION_KEY = "fcnseg.precision"
"""The ONNX metadata key ``fcnseg quantize`` sets to ``int8`` (absent: an fp32 export)."""


class MissingExtra(UserError):
    """An optional dependency (an install extra) that a command needs is not installed."""


class OnnxFileError(UserError):
    """An ONNX file that an engine cannot load."""


def engine_version(engine: str) -> str | None:
    """The installed version of ``engine``'s package, or None where it is not installed."""
    try:
        return importlib.metadata.version(ENGINE_PACKAGES[engine])
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_engines() -> tuple[str, ...]:
    """The engines of :data:`ENGINE_PACKAGES` that can run here: their package installed,
    and ``onnx`` and ``onnxscript``, which reading and making an export need (the ``cpu``
    extra brings all of them)."""
    if not all(_installed_package(p) for p in ("onnx", "onnxscript")):
        return ()
    return tuple(e for e in ENGINE_PACKAGES if engine_version(e) is not None)


def _installed_package(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _missing(engine: str) -> MissingExtra:
    return MissingExtra(
        f"--backend {engine} needs the {ENGINE_PACKAGES[engine]} package: pip install 'fcnseg[cpu]'"
    )


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class EngineModel(nn.Module):
    """An exported model run by an engine outside torch; ``metadata`` is the ONNX file's
    ``metadata_props`` (:data:`fcnseg.deploy.export.CHECKPOINT_SHA256` among them)."""

    engine = ""
    precision = "fp32"
    metadata: dict[str, str]

    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, C, H, W) float32 logits."""
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        return torch.from_numpy(self.run(x))


class OnnxModel(EngineModel):
    """An ONNX file run by onnxruntime's CPU provider (fp32, or int8 where it is quantized).

    Raises:
        MissingExtra: onnxruntime is not installed.
        OnnxFileError: onnxruntime cannot load ``path``.
    """

    engine = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise _missing("onnxruntime") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's errors share no base class below Exception
            raise OnnxFileError(f"{path}: onnxruntime cannot load it ({_first_line(e)})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = self.metadata.get(PRECISION_KEY, "fp32")

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"image": x})[0]


class OpenVinoModel(EngineModel):
    """An ONNX file run by OpenVINO's CPU plugin.

    Compiled with static shapes (faster than one dynamic-shape compilation), once per image
    shape and mode, keeping the last ``max_shapes`` (shape, mode) pairs. A single image runs
    with the LATENCY hint (one request, every thread on it); a batch with the THROUGHPUT
    hint, one image per request through an asynchronous queue over OpenVINO's streams (its
    documented setting for throughput). One call runs at a time (a lock), since requests
    and queues are reused.

    Args:
        path: the ONNX file (an fcnseg export, fp32 or int8).
        precision: what the float layers compute in: ``fp32`` or ``bf16`` (where the CPU
            has AMX or AVX512-BF16; OpenVINO's ``INFERENCE_PRECISION_HINT``). The layers of
            an int8 model (``fcnseg quantize``) that were quantized run in int8 either way,
            and :attr:`precision` is then ``int8``.
        threads: ``INFERENCE_NUM_THREADS`` (default: torch's thread count).

    Raises:
        MissingExtra: openvino is not installed.
        OnnxFileError: OpenVINO cannot read ``path``.
    """

    engine = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        max_shapes: int = 8,
    ) -> None:
        super().__init__()
        try:
            import openvino as ov
        except ImportError:
            raise _missing("openvino") from None
        self.ov, self.core = ov, ov.Core()
        try:
            self.network = self.core.read_model(os.fspath(path))
        except Exception as e:  # OpenVINO raises RuntimeError and its own types
            raise OnnxFileError(f"{path}: OpenVINO cannot read it ({_first_line(e)})") from None
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision {precision}: OpenVINO on a CPU runs fp32 or bf16")
        self.metadata = onnx_metadata(path)
        self.precision = self.metadata.get(PRECISION_KEY, precision)
        self.max_shapes = max_shapes
        self.lock = threading.Lock()  # one call at a time: requests and queues are reused
        self.config = {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        }
        self._compiled: OrderedDict[tuple, object] = OrderedDict()

    def _runner(self, mode: str, image: tuple[int, ...]) -> object:
        """An infer request (``latency``) or an async queue (``throughput``) of the model
        compiled for one image of shape ``image`` (C, H, W), compiled on first use."""
        key = (mode, *image)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        network = self.network.clone()
        network.reshape({network.input(0).get_any_name(): [1, *image]})
        config = {**self.config, "PERFORMANCE_HINT": mode.upper()}
        compiled = self.core.compile_model(network, "CPU", config)
        runner = (
            compiled.create_infer_request()
            if mode == "latency"
            else self.ov.AsyncInferQueue(compiled)
        )
        self._compiled[key] = runner
        if len(self._compiled) > self.max_shapes:
            self._compiled.popitem(last=False)
        return runner

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 1:
            request = self._runner("latency", x.shape[1:])
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()
        queue = self._runner("throughput", x.shape[1:])
        outputs: list[np.ndarray | None] = [None] * len(x)

        def done(request, index: int) -> None:
            outputs[index] = request.get_output_tensor(0).data.copy()

        queue.set_callback(done)
        for i in range(len(x)):
            queue.start_async({0: x[i : i + 1]}, userdata=i)
        queue.wait_all()
        return np.concatenate(outputs)


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An ONNX file's ``metadata_props``, read without its weights' external data."""
    try:
        import onnx
    except ImportError:
        raise MissingExtra("reading an ONNX file needs onnx: pip install 'fcnseg[cpu]'") from None
    proto = onnx.load_model(os.fspath(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}
