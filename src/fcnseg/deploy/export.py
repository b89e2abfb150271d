"""Export to ONNX with dynamic batch, height and width, and run it with onnxruntime."""

from __future__ import annotations

import copy
import logging
import os
import warnings

import numpy as np
import torch
from torch import nn

ONNX_HELP = "ONNX export needs the 'export' extra: pip install 'fcnseg[export]'"


def export_onnx(model: nn.Module, path: str | os.PathLike, *, example_size: int = 64) -> None:
    """Write ``model`` as ONNX: input ``image`` (N, 3, H, W) -> ``logits`` (N, C, H, W),
    with N, H and W dynamic (the crops are computed in the graph from the shapes)."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise RuntimeError(ONNX_HELP) from None
    # A copy, so the caller's model is left as it is: fp32 and NCHW, because
    # torch.export cannot keep H and W dynamic through channels-last weights.
    model = (
        copy.deepcopy(model).eval().to("cpu", torch.float32, memory_format=torch.contiguous_format)
    )
    example = torch.randn(1, 3, example_size, example_size)
    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=1, max=16384),
        3: torch.export.Dim("width", min=1, max=16384),
    }
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes={"x": dims},
            dynamo=True,
            verbose=False,
        )


class OnnxModel:
    """An exported FCN run by onnxruntime, called like the torch model."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError(ONNX_HELP) from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(["logits"], {"image": x})[0])
