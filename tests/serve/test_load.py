"""A bounded load on ``fcnseg serve`` over loopback (bench/serve_load.py's code at a
smaller size): zero 5xx, zero dropped connections, every answer correct, healthy
after; and a client too slow to send its body gets 408."""

import json
import socket

import httpx2
import numpy as np
import pytest

from bench.serve_load import (
    fcnseg_serve,
    good_images,
    malformed_cases,
    plan,
    reference_labels,
    run_load,
)

SIZES = ((40, 48), (48, 40), (56, 56), (36, 44))
FLAGS = ["--precision", "fp32", "--device", "cpu", "--max-body-mb", "0.25", "--max-pixels",
         "10000", "--read-timeout", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with fcnseg_serve(checkpoint, FLAGS, log) as url:
        yield url


def test_bounded_load_with_malformed_requests(checkpoint, server):
    images = good_images(SIZES, per_size=2)
    labels = reference_labels(checkpoint, images)
    assert len(np.unique(np.concatenate([label.ravel() for label in labels]))) > 1
    limits = httpx2.get(server + "/v1/model").json()["limits"]
    assert limits["max_body_bytes"] == 2**18 and limits["max_pixels"] == 10_000
    bad = malformed_cases(images[0], **limits)
    cases = plan(300, 5, images, bad)
    assert sum(c.image is None for c in cases) == 60 and {c.kind for c in cases[4::5]} == {
        c.kind for c in bad}  # fmt: skip
    result = run_load(server, cases, 16, labels)
    assert result["server_errors_5xx"] == 0 and result["dropped_connections"] == 0, result
    assert result["wrong_answers"] == 0, result
    assert result["statuses"]["200"] == 240 and result["healthy_after"], result
    assert result["forward_passes"] < 240  # some answers shared a forward pass
    assert result["mean_batch_size"] == pytest.approx(240 / result["forward_passes"], abs=0.01)


def test_a_body_sent_too_slowly_gets_408(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        sock.sendall(b"\x89PNG\r\n\x1a\n")  # then nothing more
        sock.settimeout(30)
        answer = b""
        while b'"}' not in answer:  # the headers, then the JSON body
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    head, _, body = answer.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 408"), head
    assert json.loads(body) == {"error": "the body was not sent within 1 s"}
    assert httpx2.get(server + "/healthz").status_code == 200
