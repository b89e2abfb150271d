"""Run the app with uvicorn: one process, or several workers that each load the model."""

from __future__ import annotations

import os

import uvicorn

from fcnseg.errors import ConfigError
from fcnseg.serve.app import OPTIONS_ENV, create_app, load_segmenter
from fcnseg.serve.config import ServeOptions


def serve(options: ServeOptions, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1) -> None:  # fmt: skip
    """Load the model (user errors stop here, before anything listens), then serve.

    Args:
        options: the checkpoint, how to run it and the limits.
        host, port: where to listen.
        workers: processes, each with its own model, answering on one port
            (uvicorn's ``workers``; they start from ``$FCNSEG_SERVE_OPTIONS``).
    """
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: must be from 1 to 65535")
    segmenter = load_segmenter(options)
    print(f"fcnseg serve: {options.checkpoint} ({segmenter.backend}, {segmenter.device}) on "
          f"http://{host}:{port}/ with {workers} worker{'s' if workers > 1 else ''}")  # fmt: skip
    config = {"host": host, "port": port, "limit_concurrency": options.limits.max_connections,
              "timeout_graceful_shutdown": 30}  # fmt: skip
    if workers == 1:
        uvicorn.run(create_app(options, segmenter), **config)
        return
    del segmenter  # loaded only to check the options: each worker loads its own
    os.environ[OPTIONS_ENV] = options.to_json()
    uvicorn.run("fcnseg.serve.app:app_from_environment", factory=True, workers=workers, **config)
