"""Prometheus metrics of one app, in its own registry (several apps, e.g. in tests, never
share counters), and the ASGI middleware that counts every request."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    """Requests by path and status, their latency, batch sizes, inference time and
    queue depth (read from ``depth`` at each scrape), and the process id: with several
    workers each scrape reads one of them, ``fcnseg_worker_info{pid}`` says which."""

    def __init__(self, paths: frozenset[str], depth: Callable[[], int]) -> None:
        self.paths = paths
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fcnseg_requests", "HTTP requests answered, by path and status",
            ["path", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fcnseg_request_seconds", "Time from request to the end of the answer, by path",
            ["path"], registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "fcnseg_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.inference = Histogram(
            "fcnseg_inference_seconds", "Time of one forward pass (a batch)",
            registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "fcnseg_queue_depth", "Images waiting for a batch", registry=self.registry
        )
        self.queue_depth.set_function(depth)
        worker = Info("fcnseg_worker", "The process answering", registry=self.registry)
        worker.info({"pid": str(os.getpid())})

    def path_label(self, path: str) -> str:
        """The path itself for the app's routes; ``other`` for the rest, so that
        random paths cannot grow the number of series without bound."""
        return path if path in self.paths else "other"

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)


class MetricsMiddleware:
    """Counts each HTTP request with the status it was answered with (500 if the app
    raised before answering) and times it."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, tic = 500, time.perf_counter()

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = self.metrics.path_label(scope["path"])
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - tic)
