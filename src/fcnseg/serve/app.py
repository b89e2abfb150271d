"""The HTTP API and its page, as a FastAPI app: :func:`create_app`.

Routes: ``POST /v1/segment`` (an image -> its label map as a palette PNG, or JSON with
each class's share), ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` and ``GET /`` (the page). Errors are JSON ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Literal

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fcnseg.data.images import save_label
from fcnseg.data.info import DatasetInfo
from fcnseg.deploy.inference import Segmenter
from fcnseg.nets.weights import NORMALIZATION_SPECS
from fcnseg.serve.batcher import MicroBatcher, NotRunning, QueueFull
from fcnseg.serve.config import ServeOptions
from fcnseg.serve.metrics import Metrics, MetricsMiddleware
from fcnseg.serve.uploads import Rejected, decode_image, read_upload
from fcnseg.train.device import EmulatedBf16Warning

OPTIONS_ENV = "FCNSEG_SERVE_OPTIONS"
"""Environment variable holding :meth:`ServeOptions.to_json` for
:func:`app_from_environment` (each uvicorn worker process builds its app from it)."""

PATHS = frozenset({"/", "/v1/segment", "/v1/model", "/healthz", "/readyz", "/metrics"})

PAGE = resources.files("fcnseg.serve").joinpath("page.html").read_text(encoding="utf-8")
"""The page at ``GET /``: plain HTML and a little JavaScript, no external assets."""

PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
"""The page loads nothing from elsewhere: its script and style are inline, its
images the user's own file (blob:) and the overlay (data:)."""

RETRY_AFTER_S = 1


def _normalization(name: str) -> dict:
    """What ``/v1/model`` says of a normalisation: its name, pixels in words, mean, std."""
    spec = NORMALIZATION_SPECS[name]
    return {"name": name, "pixels": spec.pixels, "mean": spec.mean, "std": spec.std}


def load_segmenter(options: ServeOptions) -> Segmenter:
    """The checkpoint as ``fcnseg predict`` loads it, batches of up to ``max_batch``;
    sets torch's threads in this process if the options say.

    Raises:
        UserError: the checkpoint, backend, precision or device cannot be used.
    """
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    return Segmenter.from_checkpoint(
        options.checkpoint,
        backend=options.backend,
        precision=options.precision,
        device=None if options.device == "auto" else options.device,
        batch_size=options.limits.max_batch,
        normalization=options.normalization,
    )


def describe_model(segmenter: Segmenter, options: ServeOptions) -> dict:
    """What ``GET /v1/model`` answers: the model, its classes and colours, how it
    wants pixels, how it runs and the limits."""
    ckpt = segmenter.checkpoint
    info = DatasetInfo(**ckpt["dataset"])
    return {
        "model": ckpt["model_config"]["name"],
        "checkpoint": os.path.basename(options.checkpoint),
        "iteration": ckpt.get("iteration"),
        "dataset": info.name,
        "classes": [
            {"index": i, "name": name, "color": _hex(color)}
            for i, (name, color) in enumerate(zip(info.classes, info.colors, strict=True))
        ],
        "normalization": _normalization(segmenter.normalization),
        "precision": segmenter.precision,
        "backend": segmenter.backend.backend,
        "backend_reason": segmenter.backend.reason,
        "device": str(segmenter.device),
        "threads": torch.get_num_threads(),
        "limits": dataclasses.asdict(options.limits),
    }


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def label_png(label: np.ndarray, colors) -> bytes:
    """A (H, W) label map as the palette PNG :func:`save_label` writes (``fcnseg predict``'s)."""
    buffer = io.BytesIO()
    buffer.name = "label.png"  # save_label's format comes from the name
    save_label(label, buffer, colors)
    return buffer.getvalue()


def label_summary(label: np.ndarray, info: DatasetInfo) -> dict:
    """Size, then per class its name, colour, pixel count and share of the image."""
    counts = np.bincount(label.ravel(), minlength=info.num_classes)
    return {
        "width": label.shape[1],
        "height": label.shape[0],
        "classes": [
            {
                "index": i,
                "name": name,
                "color": _hex(color),
                "pixels": int(count),
                "share": float(count / label.size),
            }
            for i, (name, color, count) in enumerate(
                zip(info.classes, info.colors, counts[: info.num_classes], strict=True)
            )
        ],
    }


def create_app(options: ServeOptions, segmenter: Segmenter | None = None) -> FastAPI:
    """The app for ``options``; ``segmenter`` if already loaded, else it is loaded
    at startup (``/readyz`` says when). Runs one :class:`MicroBatcher` while up."""
    limits = options.limits
    state: dict = {"batcher": None}
    metrics = Metrics(PATHS, lambda: state["batcher"].depth if state["batcher"] else 0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        seg = segmenter
        if seg is None:
            seg = await run_in_threadpool(load_segmenter, options)
        state["model"] = describe_model(seg, options)
        state["info"] = DatasetInfo(**seg.checkpoint["dataset"])
        batcher = MicroBatcher(
            seg.predict,
            max_batch=limits.max_batch,
            max_wait_s=limits.batch_wait_ms / 1000,
            max_queue=limits.max_queue,
            max_batch_pixels=limits.max_pixels,
            on_batch=metrics.observe_batch,
        )
        batcher.start()
        state["batcher"] = batcher
        yield
        state["batcher"] = None  # not ready while shutting down
        await batcher.close()

    app = FastAPI(title="fcnseg", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app)

    def running() -> MicroBatcher:
        if state["batcher"] is None:
            raise NotRunning("the model is not loaded")
        return state["batcher"]

    @app.post("/v1/segment")
    async def segment(
        request: Request,
        fmt: Literal["png", "json"] = Query("png", alias="format"),
        overlay: bool = False,
    ) -> Response:
        running().check_room()  # a full queue refuses before reading the body
        data, name = await read_upload(request, limits.max_body_bytes, limits.read_timeout_s)
        image = await run_in_threadpool(decode_image, data, name, limits.max_pixels)
        label = await running().segment(image)
        info = state["info"]
        if fmt == "png":
            png = await run_in_threadpool(label_png, label, info.colors)
            return Response(png, media_type="image/png")
        summary = await run_in_threadpool(label_summary, label, info)
        if overlay:
            png = await run_in_threadpool(label_png, label, info.colors)
            summary["overlay"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return JSONResponse(summary)

    @app.get("/v1/model")
    async def model() -> dict:
        running()
        return state["model"]

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "pid": os.getpid()}  # which worker answered

    @app.get("/readyz")
    async def readyz() -> dict:
        running()
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_CSP})

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error": one line}``, with its status and headers."""

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        message = f"busy: {exc}; retry in {RETRY_AFTER_S} s"
        return error(503, message, {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(NotRunning)
    async def not_running(request: Request, exc: NotRunning) -> JSONResponse:
        return error(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(HTTPException)  # 404, 405 from routing
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.headers and "Allow" in exc.headers:
            message += f" (allowed: {exc.headers['Allow']})"
        return error(exc.status_code, message, exc.headers)

    @app.exception_handler(RequestValidationError)  # query parameters
    async def bad_query(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()]
        return error(400, "; ".join(problems))

    @app.exception_handler(Exception)  # a bug: the client hears no details
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return error(500, "internal server error")


def app_from_environment() -> FastAPI:
    """The app for the options in ``$FCNSEG_SERVE_OPTIONS`` (uvicorn's ``--factory``):
    a worker's, whose process does nothing else."""
    # `fcnseg serve` loaded the model once before starting the workers and warned then;
    # each of N workers would repeat it, in Python's two-line format
    warnings.filterwarnings("ignore", category=EmulatedBf16Warning)
    return create_app(ServeOptions.from_json(os.environ[OPTIONS_ENV]))
