"""Export to ONNX with dynamic batch, height and width (run by :mod:`fcnseg.deploy.engines`).

An export made from a checkpoint carries the checkpoint's sha256 in its metadata
(:data:`CHECKPOINT_SHA256`), so a cached export is used only for the checkpoint it
came from (:func:`onnx_for_checkpoint`), and the checkpoint's description
(:data:`CHECKPOINT_INFO`: model, classes, normalisation, training config), so the
file runs alone in ``fcnseg predict``, ``eval`` and ``serve``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from fcnseg.atomic import replaced_atomically
from fcnseg.cache import cache_dir
from fcnseg.deploy.engines import (
    PRECISION_KEY,
    EngineModel,
    MissingExtra,
    OnnxFileError,
    OnnxModel,
    onnx_metadata,
)
from fcnseg.errors import ConfigError, UserError

ONNX_HELP = "ONNX export needs the 'export' extra: pip install 'fcnseg[export]'"
CHECKPOINT_SHA256 = "fcnseg.checkpoint_sha256"
"""The ONNX metadata key holding the sha256 of the checkpoint an export was made from."""
CHECKPOINT_INFO = "fcnseg.checkpoint"
"""The ONNX metadata key holding the checkpoint's description (JSON of :data:`INFO_KEYS`)."""
INFO_KEYS = ("model_config", "dataset", "normalization", "train_config", "iteration")
"""What of a checkpoint an export keeps: all but the weights and the optimiser's state."""


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings (torchvision ops it skips, deprecations) for the
    block, then give the ``torch.onnx`` logger back its own level."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def exportable(model: nn.Module) -> bool:
    """Whether :func:`export_onnx` covers ``model``: one head over RGB images (not NYUDv2's
    4- and 6-channel nets, not SIFT Flow's two heads)."""
    return getattr(model, "in_channels", 3) == 3 and len(getattr(model, "heads", "_")) == 1


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_size: int = 64,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``model`` as ONNX: input ``image`` (N, 3, H, W) -> ``logits`` (N, C, H, W),
    with N, H and W dynamic (the crops are computed in the graph from the shapes).

    The file is written atomically (a temp file renamed over ``path``) and its folder
    created; ``metadata`` goes into the model's ``metadata_props``.
    """
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise MissingExtra(ONNX_HELP) from None
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
    with _quiet_exporter():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes={"x": dims},
            dynamo=True,
            verbose=False,
        )
    program.model.metadata_props.update(metadata or {})
    with replaced_atomically(path) as tmp:
        # One file: external weight data would be named after the temp file.
        program.save(tmp, external_data=False)


def export_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike,
    path: str | os.PathLike,
    *,
    info: Mapping | None = None,
) -> None:
    """:func:`export_onnx` of ``checkpoint``'s ``model`` to ``path``, keyed by the
    checkpoint's sha256 (:data:`CHECKPOINT_SHA256`) and holding ``info``, the checkpoint
    dict (its :data:`INFO_KEYS`, :data:`CHECKPOINT_INFO`). An existing ``path`` is
    replaced only if it is an export made by fcnseg (:func:`is_fcnseg_export`).

    Raises:
        ConfigError: ``path`` is the checkpoint itself, a folder, or a file that is
            not an fcnseg export (a checkpoint, the user's own model).
    """
    check_target(path, checkpoint)
    _export_keyed(model, checkpoint, path, info)


def check_target(path: str | os.PathLike, checkpoint: str | os.PathLike) -> None:
    """Refuse to write an ONNX file of ``checkpoint`` to ``path`` if ``path`` is a folder,
    the checkpoint itself, or an existing file that fcnseg did not write.

    Raises:
        ConfigError: naming ``path`` and why it is kept.
    """
    _check_output(path, checkpoint)
    if Path(path).exists() and not is_fcnseg_export(path):
        raise ConfigError(
            f"{path}: exists and is not an ONNX file written by fcnseg, so it is kept; give "
            "another file name"
        )


def _check_output(path: str | os.PathLike, checkpoint: str | os.PathLike) -> None:
    if Path(path).is_dir():
        raise ConfigError(f"{path}: is a folder; give the .onnx file to write")
    if Path(path).exists() and os.path.samefile(path, checkpoint):
        raise ConfigError(f"{path}: is the checkpoint itself; write the ONNX file elsewhere")


def _export_keyed(
    model: nn.Module, checkpoint: str | os.PathLike, path: str | os.PathLike, info: Mapping | None
) -> None:
    metadata = {CHECKPOINT_SHA256: file_sha256(checkpoint)}
    if info is not None:
        metadata[CHECKPOINT_INFO] = json.dumps({k: info[k] for k in INFO_KEYS if k in info})
    export_onnx(model, path, metadata=metadata)


def default_onnx_path(checkpoint: str | os.PathLike) -> Path:
    """Where an engine's export of ``checkpoint`` is cached: ``<checkpoint>.onnx`` beside
    it, or, where that cannot be written (a read-only image, a shared models folder) or
    holds another file (``fcnseg quantize``'s int8 model, say),
    ``$XDG_CACHE_HOME/fcnseg/onnx/<name>-<hash of its path>.onnx``."""
    path = Path(checkpoint).absolute()
    beside = path.with_suffix(".onnx")
    if os.access(path.parent, os.W_OK) and _free_for_cache(beside):
        return beside
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return cache_dir("onnx") / f"{path.stem}-{key}.onnx"


def _free_for_cache(path: Path) -> bool:
    """Whether the cache may write ``path``: missing, unreadable as ONNX, or a float export
    fcnseg made, and writable (another file there, an int8 model say, is left alone)."""
    if not path.exists():
        return True
    try:
        metadata = onnx_metadata(path)
    except Exception:  # protobuf and onnx raise many types for files that are not ONNX
        return os.access(path, os.W_OK)
    return _is_float_export(metadata) and os.access(path, os.W_OK)


def checkpoint_info(path: str | os.PathLike) -> dict:
    """The checkpoint description an fcnseg ONNX file carries (:data:`CHECKPOINT_INFO`).

    Raises:
        UserError: ``path`` is not an ONNX file, or one not made by ``fcnseg export`` or
            ``fcnseg quantize``.
    """
    try:
        metadata = onnx_metadata(path)
    except Exception as e:  # protobuf and onnx raise many types for files that are not ONNX
        raise OnnxFileError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    if CHECKPOINT_INFO not in metadata:
        raise UserError(
            f"{path}: an ONNX file without fcnseg's checkpoint description; give the "
            "checkpoint, or a file written by fcnseg export or fcnseg quantize"
        )
    return json.loads(metadata[CHECKPOINT_INFO])


def is_fcnseg_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ONNX model whose metadata has :data:`CHECKPOINT_SHA256`."""
    try:
        import onnx  # installed with onnxscript, the exporter
    except ImportError:
        raise MissingExtra(ONNX_HELP) from None
    try:
        proto = onnx.load_model(os.fspath(path), load_external_data=False)
    except Exception:  # protobuf and onnx raise many types for files that are not ONNX
        return False
    return any(prop.key == CHECKPOINT_SHA256 for prop in proto.metadata_props)


def onnx_for_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike,
    path: str | os.PathLike,
    *,
    info: Mapping | None = None,
    engine: Callable[[str | os.PathLike], EngineModel] = OnnxModel,
) -> EngineModel:
    """``engine`` (e.g. :class:`~fcnseg.deploy.engines.OpenVinoModel`) on the ONNX export of
    ``checkpoint`` cached at ``path``: reused when its metadata names this checkpoint's
    sha256, exported again (with ``info``) when it is missing, unreadable or was made from
    another checkpoint (a replaced ``best.pt``). ``path`` is the cache's own file
    (``<checkpoint>.onnx``), so whatever is there is replaced, but not a folder or
    the checkpoint itself.
    """
    try:
        cached = engine(path)
    except OnnxFileError:  # missing or corrupt: exported below
        cached = None
    if cached is not None:
        if not _is_float_export(cached.metadata):
            raise ConfigError(
                f"{path}: exists and is not fcnseg's float export of a checkpoint (an int8 "
                "model, or a model of your own), so it is kept; move it to run the checkpoint"
            )
        if cached.metadata[CHECKPOINT_SHA256] == file_sha256(checkpoint):
            return cached
    _check_output(path, checkpoint)
    _export_keyed(model, checkpoint, path, info)
    return engine(path)


def _is_float_export(metadata: Mapping[str, str]) -> bool:
    """Whether an ONNX file's metadata is that of an export fcnseg made to cache (float)."""
    return CHECKPOINT_SHA256 in metadata and PRECISION_KEY not in metadata
