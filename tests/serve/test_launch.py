"""``fcnseg serve``: user errors are one line before anything listens; several
workers answer on one port."""

import os
import sys
import warnings

import httpx2
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from bench.serve_load import fcnseg_serve, scrape_workers
from fcnseg.cli import main
from fcnseg.serve.app import OPTIONS_ENV, app_from_environment, create_app
from fcnseg.serve.config import ServeOptions
from fcnseg.train.device import EmulatedBf16Warning
from tests.conftest import EMULATED_BF16_LINE, one_line_error
from tests.serve.conftest import png_bytes

SERVE_MODULES = ("fcnseg.serve.launch", "fcnseg.serve.app", "fcnseg.serve.uploads",
                 "fcnseg.serve.metrics")  # fmt: skip


@pytest.fixture
def no_server(monkeypatch):
    """uvicorn.run recorded instead of run: what it was given."""
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **config: calls.append((app, config)))
    return calls


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn", "prometheus_client", "python_multipart"])
def test_without_the_extra_one_line_says_how_to_install_it(
    checkpoint, monkeypatch, capsys, no_server, missing
):
    for module in SERVE_MODULES:
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    assert main(["serve", str(checkpoint)]) == 2
    assert one_line_error(capsys) == (
        f"fcnseg: error: fcnseg serve needs {missing}: pip install 'fcnseg[serve]'"
    )
    assert not no_server


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-batch", "0"], "max_batch (--max-batch) must be a whole number >= 1, got 0"),
        (["--batch-wait-ms", "-1"], "batch_wait_ms (--batch-wait-ms) must be a number >= 0"),
        (["--read-timeout", "nan"], "read_timeout_s (--read-timeout) must be a number >= 1"),
        (["--port", "70000"], "--port 70000: must be from 1 to 65535"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16"),
    ],
)
def test_bad_flags_are_one_line(checkpoint, capsys, no_server, flags, words):
    assert main(["serve", str(checkpoint), *flags]) == 2
    assert words in one_line_error(capsys)
    assert not no_server


def test_a_bad_checkpoint_stops_before_listening(tmp_path, capsys, no_server):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    for path in (tmp_path / "missing.pt", tmp_path / "notes.pt"):
        assert main(["serve", str(path)]) == 2
        assert str(path) in one_line_error(capsys)
    assert not no_server


def test_one_worker_serves_the_loaded_app(checkpoint, capsys, no_server):
    assert main(["serve", str(checkpoint), "--port", "8123", "--max-connections", "9",
                 "--precision", "fp32"]) == 0  # fmt: skip
    [(app, config)] = no_server
    assert config["port"] == 8123 and config["host"] == "127.0.0.1"
    assert config["limit_concurrency"] == 9 and "workers" not in config
    assert "/v1/segment" in {route.path for route in app.routes}
    assert "http://127.0.0.1:8123/ with 1 worker" in capsys.readouterr().out


def test_emulated_bf16_is_one_line_from_serve_and_not_repeated_by_workers(
    checkpoint, cpu_with, monkeypatch, capsys, no_server
):
    cpu_with("avx2")
    monkeypatch.setenv(OPTIONS_ENV, "")  # serve sets it for the workers: undone after
    assert main(["serve", str(checkpoint), "--workers", "2", "--precision", "bf16",
                 "--device", "cpu"]) == 0  # fmt: skip
    warned = [line for line in capsys.readouterr().err.splitlines() if "bf16" in line]
    assert warned == [EMULATED_BF16_LINE]
    [(app, config)] = no_server
    assert config["workers"] == 2
    options = ServeOptions.from_json(os.environ[OPTIONS_ENV])
    for make, expected in ((lambda: create_app(options), 1), (app_from_environment, 0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with TestClient(make()) as client:  # a worker starting: it loads the model
                assert client.get("/readyz").status_code == 200
        assert [w.category for w in caught].count(EmulatedBf16Warning) == expected


def test_two_workers_answer_on_one_port(checkpoint, tmp_path):
    flags = ["--workers", "2", "--threads", "1", "--precision", "fp32", "--device", "cpu",
             "--max-pixels", "4000"]  # fmt: skip
    with fcnseg_serve(checkpoint, flags, tmp_path / "serve.log") as url:
        model = httpx2.get(f"{url}/v1/model").json()
        assert model["limits"]["max_pixels"] == 4000  # the options reached the workers
        assert model["threads"] == 1
        image = png_bytes(np.zeros((40, 50, 3), np.uint8))
        for _ in range(6):
            response = httpx2.post(f"{url}/v1/segment?format=json", content=image, timeout=30)
            assert response.status_code == 200 and response.json()["width"] == 50
        too_big = png_bytes(np.zeros((70, 60, 3), np.uint8))  # 4,200 pixels
        assert httpx2.post(f"{url}/v1/segment", content=too_big).status_code == 413
        workers = scrape_workers(url, 2)  # each worker's own metrics, by pid
        served = [metric(text, "/v1/segment") for text in workers.values()]
        assert sum(served) == 7 and os.getpid() not in map(int, workers)
    assert "Finished server process" in (tmp_path / "serve.log").read_text()


def metric(text: str, path: str) -> float:
    """Requests to ``path`` counted in one worker's metrics, any status."""
    rows = [row for row in text.splitlines() if row.startswith("fcnseg_requests_total{")]
    return sum(float(row.split()[-1]) for row in rows if f'path="{path}"' in row)
