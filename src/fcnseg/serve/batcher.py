"""Micro-batching: same-size images that arrive together share one forward pass.

Requests wait in a bounded queue, grouped by image size. One task on the event loop
takes the group whose oldest image arrived first, waits up to ``max_wait_s`` after
that arrival for more images of its size, and hands at most a batch to the one
inference thread; while that thread runs, the next batch gathers. A full queue
refuses new images at once (:class:`QueueFull`) rather than letting it grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Predict = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Same-size (H, W, 3) uint8 images -> their (H, W) uint8 label maps, in order."""


class QueueFull(Exception):
    """The queue holds ``max_queue`` images: come back later (503, Retry-After)."""


class NotRunning(Exception):
    """The batcher is not running: not started yet, or closed before this image was
    segmented (503)."""


@dataclass
class _Job:
    image: np.ndarray
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Segments images in batches of one size, on one thread, off the event loop.

    Args:
        predict: runs the model (:data:`Predict`); called from the inference thread only.
        max_batch: most images per call of ``predict``.
        max_wait_s: longest the oldest waiting image waits for others of its size.
        max_queue: most images waiting (not yet in a batch); more raise :class:`QueueFull`.
        max_batch_pixels: most pixels per batch (a batch of large images is smaller).
        on_batch: called on the event loop after each batch with its size and seconds.

    Example:
        >>> async def demo():
        ...     batcher = MicroBatcher(lambda ims: [im[..., 0] for im in ims], max_batch=4)
        ...     batcher.start()
        ...     label = await batcher.segment(np.ones((2, 3, 3), np.uint8))
        ...     await batcher.close()
        ...     return label.shape
        >>> asyncio.run(demo())
        (2, 3)
    """

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        max_batch_pixels: int | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.max_queue, self.max_batch_pixels = max_queue, max_batch_pixels
        self.on_batch = on_batch
        self._groups: dict[tuple[int, int], deque[_Job]] = {}  # FIFO per (H, W)
        self._waiting = 0
        self._running: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fcnseg-inference")

    @property
    def depth(self) -> int:
        """Images waiting for a batch."""
        return self._waiting

    def start(self) -> None:
        """Start batching on the running event loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop: images not yet answered get :class:`NotRunning`; the thread ends."""
        running = self._running  # the batch in the thread, if any: cancelling forgets it
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting = [job for jobs in self._groups.values() for job in jobs]
        _fail([*running, *waiting], NotRunning("the server is shutting down"))
        self._groups.clear()
        self._waiting, self._wake = 0, None
        await asyncio.to_thread(self._executor.shutdown)  # after its batch, off the loop

    def check_room(self) -> None:
        """Raise :class:`QueueFull` if one more image would not fit in the queue."""
        if self._waiting >= self.max_queue:
            raise QueueFull(f"{self._waiting} images are waiting for the model")

    async def segment(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) uint8 labels, once a batch with it has run.

        Raises:
            QueueFull: ``max_queue`` images are waiting already.
            NotRunning: not started, or closed before the image's batch ran.
        """
        if self._wake is None:
            raise NotRunning("the model is not loaded yet")
        self.check_room()
        job = _Job(image, asyncio.get_running_loop().create_future())
        self._groups.setdefault(image.shape[:2], deque()).append(job)
        self._waiting += 1
        self._wake.set()
        return await job.future

    def batch_limit(self, size: tuple[int, int]) -> int:
        """Most images of ``size`` (H, W) in one batch: ``max_batch``, fewer where
        ``max_batch_pixels`` says so, never less than one."""
        if self.max_batch_pixels is None:
            return self.max_batch
        return max(1, min(self.max_batch, self.max_batch_pixels // (size[0] * size[1])))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._groups:
                await self._run_batch(await self._next_batch())

    async def _next_batch(self) -> list[_Job]:
        """The jobs of the next batch, taken out of the queue: the oldest job's size
        group, once it is full or its oldest job has waited ``max_wait_s``."""
        size, jobs = min(self._groups.items(), key=lambda item: item[1][0].arrived)
        limit = self.batch_limit(size)
        deadline = jobs[0].arrived + self.max_wait_s
        while len(jobs) < limit and (left := deadline - time.monotonic()) > 0:
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        batch = [jobs.popleft() for _ in range(min(limit, len(jobs)))]
        if not jobs:
            del self._groups[size]
        self._waiting -= len(batch)
        return [job for job in batch if not job.future.done()]  # a cancelled request: skipped

    async def _run_batch(self, batch: list[_Job]) -> None:
        if not batch:
            return
        self._running = batch
        loop = asyncio.get_running_loop()
        tic = time.perf_counter()
        try:
            labels = await loop.run_in_executor(
                self._executor, self.predict, [job.image for job in batch]
            )
        except Exception as e:  # the model failed (a bug, out of memory): each request hears it
            _fail(batch, e)
            return
        finally:
            self._running = []
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - tic)
        for job, label in zip(batch, labels, strict=True):
            if not job.future.done():
                job.future.set_result(label)


def _fail(jobs, error: BaseException) -> None:
    """Answer each job not yet answered with ``error``."""
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
