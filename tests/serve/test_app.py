"""The API through FastAPI's TestClient: every image kind gives the label map ``fcnseg
predict`` writes; every kind of bad input gets its 4xx and a one-line JSON error."""

import base64
import dataclasses
import io
import random
import re
import struct
import threading
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fcnseg.cli import main
from fcnseg.serve.app import create_app, load_segmenter
from tests.conftest import dusk_with_bright_sky, save_balanced_checkpoints
from tests.data.test_images import write_blank_png
from tests.serve.conftest import MODES, label_of, options, png_bytes, serving


@pytest.fixture(scope="module")
def predicted(checkpoint, photos, tmp_path_factory):
    """``fcnseg predict`` on every image of :data:`MODES`: the folder of its outputs."""
    out = tmp_path_factory.mktemp("predicted")
    assert main(["predict", str(checkpoint), str(photos), "--out", str(out), "--no-overlay",
                 "--device", "cpu", "--precision", "fp32"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("name", sorted(MODES))
def test_each_image_kind_gets_the_png_predict_writes(client, photos, predicted, name):
    data = (photos / name).read_bytes()
    expected = (predicted / f"{name.rsplit('.', 1)[0]}.png").read_bytes()
    raw = client.post("/v1/segment", content=data, headers={"content-type": "image/x-any"})
    form = client.post("/v1/segment", files={"image": (name, data, "application/octet-stream")})
    for response in (raw, form):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content == expected  # same labels, same palette, same bytes
    assert label_of(raw.content).shape == MODES[name]


def test_labels_vary(client, photos):
    """The tiny model is not constant: equal PNGs above mean equal labels."""
    label = label_of(
        client.post("/v1/segment", content=(photos / "photo.jpg").read_bytes()).content
    )
    assert len(np.unique(label)) > 1


@pytest.mark.parametrize("name", sorted(MODES))
def test_json_counts_each_class_and_shares_sum_to_one(client, photos, name):
    data = (photos / name).read_bytes()
    png = client.post("/v1/segment", content=data).content
    result = client.post("/v1/segment?format=json&overlay=true", content=data).json()
    height, width = MODES[name]
    assert (result["width"], result["height"]) == (width, height)
    counts = np.bincount(label_of(png).ravel(), minlength=5)
    assert [c["pixels"] for c in result["classes"]] == counts.tolist()
    assert [c["name"] for c in result["classes"]] == [
        "background",
        "disc",
        "box",
        "triangle",
        "bar",
    ]
    assert result["classes"][1]["color"] == "#dc3c32"  # the synthetic palette's disc
    assert sum(c["share"] for c in result["classes"]) == pytest.approx(1.0, abs=1e-12)
    for c in result["classes"]:
        assert c["share"] == c["pixels"] / (width * height)
    prefix = "data:image/png;base64,"
    assert result["overlay"].startswith(prefix)
    assert base64.b64decode(result["overlay"][len(prefix) :]) == png
    assert "overlay" not in client.post("/v1/segment?format=json", content=data).json()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` RGB pixels, with four bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(4))


def blank_png(tmp_path, width: int, height: int) -> bytes:
    write_blank_png(tmp_path / "blank.png", width, height)
    return (tmp_path / "blank.png").read_bytes()


GOOD = png_bytes(np.full((20, 30, 3), 90, np.uint8))

BAD_REQUESTS = [
    # (case, method, path, keyword arguments, status, words in the error)
    ("body over the limit, declared", "post", "/v1/segment", {"content": b"x" * 200_001}, 413,
     ["200,000 bytes"]),
    ("body over the limit, streamed", "post", "/v1/segment",
     {"content": iter([b"x" * 150_000, b"x" * 150_000])}, 413, ["200,000 bytes"]),
    ("multipart over the limit", "post", "/v1/segment",
     {"files": {"image": ("big.png", b"x" * 250_000)}}, 413, ["200,000 bytes"]),
    ("pixel bomb, header only", "post", "/v1/segment", {"content": png_header_only(5000, 5000)},
     413, ["5000x5000", "25,000,000", "1,000,000"]),
    ("text", "post", "/v1/segment", {"content": b"hello, world"}, 415, ["not an image"]),
    ("text in multipart", "post", "/v1/segment",
     {"files": {"image": ("notes.txt", b"hello\n")}}, 415, ["notes.txt", "not an image"]),
    ("truncated PNG", "post", "/v1/segment", {"content": GOOD[: len(GOOD) // 2]}, 400,
     ["truncated"]),
    ("truncated PNG in multipart", "post", "/v1/segment",
     {"files": {"image": ("cut.png", GOOD[:60])}}, 400, ["cut.png"]),
    ("header only", "post", "/v1/segment", {"content": png_header_only(40, 30)}, 400,
     ["cannot read"]),
    ("empty body", "post", "/v1/segment", {"content": b""}, 400, ["empty body"]),
    ("empty file part", "post", "/v1/segment", {"files": {"image": ("none.png", b"")}}, 400,
     ["none.png", "empty"]),
    ("multipart without a file", "post", "/v1/segment",
     {"content": b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--\r\n",
      "headers": {"content-type": "multipart/form-data; boundary=b"}}, 400, ["no file part"]),
    ("two files", "post", "/v1/segment",
     {"files": [("a", ("a.png", GOOD)), ("b", ("b.png", GOOD))]}, 400, ["multipart", "files"]),
    ("unknown format", "post", "/v1/segment?format=xml", {"content": GOOD}, 400, ["format"]),
    ("overlay not a boolean", "post", "/v1/segment?format=json&overlay=maybe",
     {"content": GOOD}, 400, ["overlay"]),
    ("wrong method", "get", "/v1/segment", {}, 405, ["GET /v1/segment", "POST"]),
    ("wrong method on the model", "post", "/v1/model", {"content": GOOD}, 405, ["GET"]),
    ("unknown path", "get", "/v2/segment", {}, 404, ["/v2/segment", "Not Found"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "method", "path", "kwargs", "status", "words"), BAD_REQUESTS,
                         ids=[row[0] for row in BAD_REQUESTS])  # fmt: skip
def test_bad_input_gets_its_status_and_one_line(client, case, method, path, kwargs, status, words):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert "\n" not in error and all(w in error for w in words), error
    if status == 405:
        assert response.headers["allow"] in error


@pytest.mark.parametrize("side", [5000, 20000])  # under and over Pillow's own bomb error
def test_pixel_bombs_are_refused_from_the_header(client, tmp_path, side):
    response = client.post(
        "/v1/segment", files={"image": ("bomb.png", blank_png(tmp_path, side, side))}
    )
    assert response.status_code == 413
    assert response.json()["error"].startswith(f"bomb.png: {side}x{side} pixels")


def test_the_pixel_limit_is_inclusive(checkpoint, tmp_path):
    with serving(checkpoint, max_pixels=20 * 30) as client:
        assert client.post("/v1/segment", content=blank_png(tmp_path, 30, 20)).status_code == 200
        assert client.post("/v1/segment", content=blank_png(tmp_path, 31, 20)).status_code == 413


def corruptions(seed: int = 0, count: int = 12):
    """Valid small images in several formats, each damaged ``count`` ways: bytes
    flipped, cut short, or a run of them overwritten."""
    rng = random.Random(seed)
    image = np.random.default_rng(seed).integers(0, 256, (24, 28, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt)
        data = buffer.getvalue()
        for i in range(count):
            damaged = bytearray(data)
            if i % 3 == 0:
                for _ in range(rng.randint(1, 8)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            elif i % 3 == 1:
                damaged = damaged[: rng.randrange(1, len(damaged))]
            else:
                start = rng.randrange(len(damaged))
                damaged[start : start + 16] = bytes(rng.randrange(256) for _ in range(16))
            yield fmt, bytes(damaged)


def test_damaged_files_never_cost_a_server_error(client):
    statuses = {}
    for fmt, data in corruptions():
        response = client.post("/v1/segment", content=data)
        assert response.status_code in (200, 400, 413, 415), (fmt, response.text)
        statuses.setdefault(response.status_code, set()).add(fmt)
    assert {400, 415} <= set(statuses)  # the damage was seen as such
    assert client.get("/readyz").status_code == 200


def test_model_description_shows_the_limits(client):
    model = client.get("/v1/model").json()
    assert model["model"] == "fcn8s" and model["checkpoint"] == "tiny.pt"
    assert model["iteration"] == 7 and model["dataset"] == "synthetic"
    assert [c["name"] for c in model["classes"]][:2] == ["background", "disc"]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c["color"]) for c in model["classes"])
    assert model["normalization"]["name"] == "imagenet"
    assert model["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert (model["precision"], model["backend"], model["device"]) == ("fp32", "torch", "cpu")
    assert model["limits"]["max_pixels"] == 1_000_000
    assert model["limits"]["max_body_bytes"] == 200_000
    assert model["limits"]["max_batch"] == 8


def test_health_and_readiness(checkpoint):
    from fastapi.testclient import TestClient

    from fcnseg.serve.app import create_app

    app = create_app(options(checkpoint))
    idle = TestClient(app)  # not started: no lifespan, no model
    assert idle.get("/healthz").status_code == 200
    for path in ("/readyz", "/v1/model"):
        response = idle.get(path)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert idle.post("/v1/segment", content=GOOD).status_code == 503
    with TestClient(app) as started:
        assert started.get("/readyz").json() == {"status": "ready"}
        assert started.post("/v1/segment", content=GOOD).status_code == 200


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus' text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    line = f"{name}{{{wanted}}} " if labels else f"{name} "
    values = [float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)]
    return values[0] if values else 0.0


def test_metrics_count_requests_batches_and_apps_apart(checkpoint):
    with serving(checkpoint) as first, serving(checkpoint) as second:
        for _ in range(3):
            assert first.post("/v1/segment", content=GOOD).status_code == 200
        first.post("/v1/segment", content=b"nope")
        first.get("/no/such/path/1")
        first.get("/no/such/path/2")
        text = first.get("/metrics").text
        assert metric(text, "fcnseg_requests_total", path="/v1/segment", status="200") == 3
        assert metric(text, "fcnseg_requests_total", path="/v1/segment", status="415") == 1
        assert metric(text, "fcnseg_requests_total", path="other", status="404") == 2
        assert metric(text, "fcnseg_request_seconds_count", path="/v1/segment") == 4
        assert metric(text, "fcnseg_batch_size_count") == 3
        assert metric(text, "fcnseg_batch_size_sum") == 3
        assert metric(text, "fcnseg_queue_depth") == 0
        assert "fcnseg_inference_seconds_bucket" in text
        other = second.get("/metrics").text
        assert metric(other, "fcnseg_requests_total", path="/v1/segment", status="200") == 0


def test_a_full_queue_answers_503_with_retry_after(checkpoint):
    """One image in the model (held there), one waiting: the queue of one is full."""
    segmenter = load_segmenter(options(checkpoint, max_batch=1))
    entered, release = threading.Event(), threading.Event()
    predict = segmenter.predict

    def held_predict(images):
        entered.set()
        assert release.wait(30)
        return predict(images)

    segmenter.predict = held_predict
    with serving(checkpoint, segmenter, max_queue=1, max_batch=1) as client:
        answers = []

        def post():
            answers.append(client.post("/v1/segment", content=GOOD).status_code)

        threads = [threading.Thread(target=post) for _ in range(2)]
        threads[0].start()
        assert entered.wait(30)  # the first image is in the model, out of the queue
        threads[1].start()
        while metric(client.get("/metrics").text, "fcnseg_queue_depth") < 1:
            threads[1].join(0.01)  # the second image is waiting
        response = client.post("/v1/segment", content=GOOD)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "busy" in response.json()["error"]
        release.set()
        for thread in threads:
            thread.join(30)
        assert answers == [200, 200]
        assert client.post("/v1/segment", content=GOOD).status_code == 200


def test_the_page_is_served_without_external_assets(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert "v1/segment" in html and 'type="range"' in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from another host


def test_normalization_option_serves_as_the_checkpoint_saved_with_it(tmp_path):
    """``fcnseg serve --normalization``: the labels of the checkpoint saved with that mode,
    and ``/v1/model`` says which."""
    balanced, clipped = save_balanced_checkpoints(tmp_path)
    image = dusk_with_bright_sky()
    fed = dataclasses.replace(options(balanced), normalization="imagenet-greyworld-clip")
    with TestClient(create_app(fed)) as client:
        assert client.get("/v1/model").json()["normalization"]["name"] == fed.normalization
        labels = label_of(client.post("/v1/segment", content=png_bytes(image)).content)
    for path, same in [(clipped, True), (balanced, False)]:
        with serving(path) as client:
            other = label_of(client.post("/v1/segment", content=png_bytes(image)).content)
        assert np.array_equal(labels, other) == same
