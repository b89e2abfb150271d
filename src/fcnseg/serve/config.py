"""What a server runs and the limits it keeps: plain frozen dataclasses, checked when made."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from fcnseg.data.images import MAX_PIXELS
from fcnseg.errors import ConfigError

DEFAULT_MAX_PIXELS = min(MAX_PIXELS, 4096 * 4096)
"""16.8 MP (a 4096 x 4096 image), or less where this machine's memory holds less
(:data:`fcnseg.data.images.MAX_PIXELS`): one such image through the published
FCN-8s costs about 10 GB in fp32."""

FLAGS = {
    "max_body_bytes": "--max-body-mb",
    "max_pixels": "--max-pixels",
    "max_batch": "--max-batch",
    "batch_wait_ms": "--batch-wait-ms",
    "max_queue": "--max-queue",
    "read_timeout_s": "--read-timeout",
    "max_connections": "--max-connections",
}
"""The ``fcnseg serve`` flag of each :class:`Limits` field (errors name both)."""


@dataclass(frozen=True)
class Limits:
    """What one server process accepts and holds at once.

    Attributes:
        max_body_bytes: largest request body; more -> 413, from ``Content-Length``
            or while reading.
        max_pixels: largest image (width x height), read from its header before it
            is decoded; more -> 413. A batch holds at most this many pixels too.
        max_batch: most same-size images in one forward pass.
        batch_wait_ms: how long the oldest image waits for others of its size.
        max_queue: images waiting for the model; one more -> 503 with Retry-After.
        read_timeout_s: time allowed to send a request's body; more -> 408.
        max_connections: open connections and requests at once (uvicorn's
            ``limit_concurrency``); more -> 503.
    """

    max_body_bytes: int = 32 * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    max_queue: int = 64
    read_timeout_s: float = 30.0
    max_connections: int = 256

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name == "batch_wait_ms" else 1
            kind = float if f.type == "float" else int
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{f.name} ({FLAGS[f.name]}): expected a number, got {value!r}")
            if not math.isfinite(value) or value < low or (kind is int and value != int(value)):
                what = "a whole number" if kind is int else "a number"
                raise ConfigError(
                    f"{f.name} ({FLAGS[f.name]}) must be {what} >= {low}, got {value!r}"
                )
            object.__setattr__(self, f.name, kind(value))


@dataclass(frozen=True)
class ServeOptions:
    """The model a server loads and how: the same choices as ``fcnseg predict``, torch's
    threads per process (None: torch's default) and how its pixels are fed (None: the
    checkpoint's normalisation)."""

    checkpoint: str
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    limits: Limits = field(default_factory=Limits)
    threads: int | None = None
    normalization: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        data = json.loads(text)
        return cls(**{**data, "limits": Limits(**data["limits"])})
