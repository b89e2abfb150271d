"""``fcnseg serve --backend openvino``: the app runs the checkpoint's export, says so in
``/v1/model``, and answers with torch's labels."""

import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fcnseg.serve.app import create_app
from fcnseg.serve.config import Limits, ServeOptions
from tests.serve.conftest import MODES, label_of

pytest.importorskip("openvino")
pytest.importorskip("onnxscript")


def test_openvino_fp32_serves_torch_labels(checkpoint, client, photos, tmp_path):
    own = tmp_path / "tiny.pt"  # the export is written next to the checkpoint: a copy's
    shutil.copy(checkpoint, own)
    options = ServeOptions(str(own), "openvino", "fp32", "cpu", Limits(max_pixels=1_000_000))
    with TestClient(create_app(options)) as engine:
        described = engine.get("/v1/model").json()
        assert (described["backend"], described["precision"]) == ("openvino", "fp32")
        assert described["backend_reason"] == "asked" and described["device"] == "cpu"
        labels, expected = [], []
        for name in sorted(MODES):
            data = (photos / name).read_bytes()
            response = engine.post("/v1/segment", content=data)
            assert response.status_code == 200, response.text
            labels.append(label_of(response.content).ravel())
            expected.append(label_of(client.post("/v1/segment", content=data).content).ravel())
            assert labels[-1].size == expected[-1].size == np.prod(MODES[name])
    assert client.get("/v1/model").json()["backend"] == "torch"  # the reference is torch's
    labels, expected = np.concatenate(labels), np.concatenate(expected)
    assert len(np.unique(expected)) > 1
    assert (labels == expected).mean() >= 0.99
    assert own.with_suffix(".onnx").is_file()
