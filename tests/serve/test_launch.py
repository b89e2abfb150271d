"""``fcnseg serve``: user errors are one line before anything listens; several
workers answer on one port."""

import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import uvicorn

from fcnseg.cli import main
from tests.serve.conftest import png_bytes

SERVE_MODULES = ("fcnseg.serve.launch", "fcnseg.serve.app", "fcnseg.serve.uploads",
                 "fcnseg.serve.metrics")  # fmt: skip


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("fcnseg: error: ") and "\n" not in err, err
    return err


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_answer_on_one_port(checkpoint, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "fcnseg", "serve", str(checkpoint), "--port", str(port),
               "--workers", "2", "--threads", "1", "--precision", "fp32", "--device", "cpu",
               "--max-pixels", "4000"]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        pids = set()
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:  # a new connection each time: the kernel hands it to either worker
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    pids.add(httpx.get(f"{url}/healthz", timeout=5).json()["pid"])
            except httpx.TransportError:
                time.sleep(0.2)
        assert len(pids) == 2 and server.pid not in pids, (tmp_path / "serve.log").read_text()
        model = httpx.get(f"{url}/v1/model").json()
        assert model["limits"]["max_pixels"] == 4000  # the options reached the workers
        image = png_bytes(np.zeros((40, 50, 3), np.uint8))
        for _ in range(6):
            response = httpx.post(f"{url}/v1/segment?format=json", content=image, timeout=30)
            assert response.status_code == 200 and response.json()["width"] == 50
        too_big = png_bytes(np.zeros((70, 60, 3), np.uint8))  # 4,200 pixels
        assert httpx.post(f"{url}/v1/segment", content=too_big).status_code == 413
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 0
        log.close()
    assert "Finished server process" in (tmp_path / "serve.log").read_text()
