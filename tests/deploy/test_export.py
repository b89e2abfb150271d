import errno
import hashlib
import logging
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fcnseg
from fcnseg.deploy import export
from fcnseg.deploy.export import CHECKPOINT_SHA256, OnnxFileError, OnnxModel, onnx_for_checkpoint
from fcnseg.errors import ConfigError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    return fcnseg.build_model("fcn8s", 3, width=0.0625).eval()


def test_export_leaves_the_callers_logging_and_warnings_alone(model, tmp_path):
    logger = logging.getLogger("torch.onnx")
    level, filters = logger.level, list(warnings.filters)
    logger.setLevel(logging.INFO)
    try:
        export.export_onnx(model, tmp_path / "new" / "m.onnx", metadata={"note": "kept"})
        assert logger.level == logging.INFO
        assert warnings.filters == filters
    finally:
        logger.setLevel(level)
    assert OnnxModel(tmp_path / "new" / "m.onnx").metadata["note"] == "kept"
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["m.onnx"]  # no temp file left


def test_failed_export_keeps_the_old_file(model, tmp_path, monkeypatch):
    class TornWrite:
        model = SimpleNamespace(metadata_props={})

        def save(self, path, external_data):
            Path(path).write_bytes(b"half a model")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: TornWrite())
    (tmp_path / "m.onnx").write_bytes(b"the previous export")
    with pytest.raises(OSError, match="No space"):
        export.export_onnx(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def write_identity_onnx(path, metadata) -> None:
    """A valid ONNX file carrying ``metadata``: stands in for the (slow) real export."""
    node = onnx.helper.make_node("Identity", ["image"], ["logits"])
    value = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, None)
    result = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    proto = onnx.helper.make_model(onnx.helper.make_graph([node], "id", [value], [result]))
    onnx.helper.set_model_props(proto, dict(metadata))
    onnx.save(proto, path)


def test_cached_export_follows_its_checkpoint(model, tmp_path, monkeypatch):
    exports = []

    def fake_export(model, path, *, metadata):
        write_identity_onnx(path, metadata)
        exports.append(path)

    monkeypatch.setattr(export, "export_onnx", fake_export)
    checkpoint, cached = tmp_path / "best.pt", tmp_path / "best.onnx"
    checkpoint.write_bytes(b"weights, first run")

    def key() -> str:
        return onnx_for_checkpoint(model, checkpoint, cached).metadata[CHECKPOINT_SHA256]

    assert key() == hashlib.sha256(b"weights, first run").hexdigest() and len(exports) == 1
    assert key() == hashlib.sha256(b"weights, first run").hexdigest() and len(exports) == 1
    checkpoint.write_bytes(b"weights, second run")  # best.pt replaced: exported again
    assert key() == hashlib.sha256(b"weights, second run").hexdigest() and len(exports) == 2
    cached.write_bytes(b"\x00 not a model")  # corrupt: exported again, no traceback
    assert key() == hashlib.sha256(b"weights, second run").hexdigest() and len(exports) == 3
    cached.unlink()
    assert key() == hashlib.sha256(b"weights, second run").hexdigest() and len(exports) == 4


def test_unreadable_onnx_is_a_user_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(OnnxFileError, match="bad.onnx: onnxruntime cannot load it"):
        OnnxModel(tmp_path / "bad.onnx")


def test_export_never_replaces_the_checkpoint(model, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"a checkpoint, oddly named")
    with pytest.raises(ConfigError, match="is the checkpoint itself"):
        export.export_checkpoint(model, tmp_path / "model.onnx", tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == b"a checkpoint, oddly named"


def test_an_unwritable_folder_caches_the_export_in_the_user_cache(tmp_path, monkeypatch):
    a, b = tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt"
    for checkpoint in (a, b):
        checkpoint.parent.mkdir()
        checkpoint.write_bytes(b"weights")
    assert export.default_onnx_path(a) == a.with_suffix(".onnx")  # writable: beside it
    # A folder we may not write (a read-only image); root may write anywhere, so say so.
    monkeypatch.setattr(export.os, "access", lambda path, mode: False)
    cached = {export.default_onnx_path(p) for p in (a, b)}
    assert len(cached) == 2  # two checkpoints of one name: two files
    for path in cached:
        assert path.parent == Path(os.environ["XDG_CACHE_HOME"]) / "fcnseg" / "onnx"
        assert path.name.startswith("best-") and path.suffix == ".onnx"


def test_an_int8_model_at_the_cache_name_is_neither_run_nor_replaced(model, tmp_path):
    from fcnseg.deploy.engines import PRECISION_KEY

    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    beside = tmp_path / "best.onnx"  # fcnseg quantize best.pt -o best.onnx
    sha = hashlib.sha256(b"weights").hexdigest()
    export.export_onnx(model, beside, metadata={CHECKPOINT_SHA256: sha, PRECISION_KEY: "int8"})
    kept = beside.read_bytes()
    # The cache goes elsewhere, and the float export is made there.
    cached = export.default_onnx_path(checkpoint)
    assert cached.parent.name == "onnx" and cached != beside
    runner = onnx_for_checkpoint(model, checkpoint, cached)
    assert PRECISION_KEY not in runner.metadata and runner.metadata[CHECKPOINT_SHA256] == sha
    # Asked to use that file as the cache: refused in one line, the file kept.
    with pytest.raises(ConfigError, match="best.onnx: exists and is not fcnseg's float export"):
        onnx_for_checkpoint(model, checkpoint, beside)
    assert beside.read_bytes() == kept


def test_an_engine_without_onnx_or_onnxscript_is_not_installed(monkeypatch):
    from fcnseg.deploy import engines

    assert engines.installed_engines()  # both, here
    for missing in ("onnx", "onnxscript"):
        monkeypatch.setattr(engines, "_installed_package", lambda name, m=missing: name != m)
        assert engines.installed_engines() == ()
