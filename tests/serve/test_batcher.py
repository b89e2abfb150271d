"""The micro-batcher on its own: what goes into each batch, and who gets which answer."""

import asyncio
import threading

import numpy as np
import pytest

from fcnseg.serve.batcher import MicroBatcher, NotRunning, QueueFull


def image(height: int, width: int, value: int) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


class Recorder:
    """A model that answers each image with its own first channel and notes each
    batch's sizes, optionally holding the first batch until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[tuple[int, int]]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, images):
        assert len({im.shape for im in images}) == 1, "sizes mixed in one batch"
        self.batches.append([im.shape[:2] for im in images])
        self.entered.set()
        assert self.release.wait(10)
        return [im[..., 0].copy() for im in images]


def run(coroutine_function, *args):
    return asyncio.run(coroutine_function(*args))


async def segment_all(batcher: MicroBatcher, images) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.segment(im) for im in images))
    finally:
        await batcher.close()


def test_same_size_images_that_arrive_together_share_batches():
    model = Recorder()
    images = [image(4, 5, v) for v in range(11)]
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.2)
    labels = run(segment_all, batcher, images)
    assert [len(b) for b in model.batches] == [4, 4, 3]
    for v, label in enumerate(labels):  # each answer to its own request
        np.testing.assert_array_equal(label, np.full((4, 5), v, np.uint8))


def test_sizes_are_never_mixed_and_the_oldest_size_goes_first():
    model = Recorder()
    images = [image(4, 5, 1), image(6, 2, 2), image(4, 5, 3), image(6, 2, 4), image(3, 3, 5)]
    labels = run(segment_all, MicroBatcher(model, max_batch=8, max_wait_s=0.2), images)
    assert model.batches == [[(4, 5), (4, 5)], [(6, 2), (6, 2)], [(3, 3)]]
    assert [int(label[0, 0]) for label in labels] == [1, 2, 3, 4, 5]


def test_large_images_make_smaller_batches():
    batcher = MicroBatcher(Recorder(), max_batch=8, max_batch_pixels=100)
    assert batcher.batch_limit((5, 5)) == 4
    assert batcher.batch_limit((2, 3)) == 8
    assert batcher.batch_limit((20, 20)) == 1  # over the budget alone: still served
    model = Recorder()
    run(segment_all, MicroBatcher(model, max_batch=8, max_wait_s=0.2, max_batch_pixels=100),
        [image(5, 5, v) for v in range(6)])  # fmt: skip
    assert [len(b) for b in model.batches] == [4, 2]


def test_an_image_alone_waits_at_most_the_wait():
    model = Recorder()

    async def one_then_another():
        batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.01)
        batcher.start()
        first = await batcher.segment(image(3, 3, 1))  # answered although the batch is not full
        second = await batcher.segment(image(3, 3, 2))
        await batcher.close()
        return first, second

    first, second = run(one_then_another)
    assert model.batches == [[(3, 3)], [(3, 3)]] and first[0, 0] == 1 and second[0, 0] == 2


def test_a_full_queue_refuses_at_once_and_a_batch_gathers_while_the_model_runs():
    model = Recorder(hold=True)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0, max_queue=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.segment(image(3, 3, 0)))
        while not model.entered.is_set():  # the first image is in the model
            await asyncio.sleep(0.001)
        waiting = [asyncio.ensure_future(batcher.segment(image(3, 3, v))) for v in (1, 2, 3)]
        await asyncio.sleep(0.01)
        assert batcher.depth == 3
        with pytest.raises(QueueFull, match="3 images are waiting"):
            await batcher.segment(image(3, 3, 4))
        model.release.set()
        labels = await asyncio.gather(first, *waiting)
        assert batcher.depth == 0
        await batcher.close()
        return labels

    labels = run(scenario)
    assert [int(label[0, 0]) for label in labels] == [0, 1, 2, 3]
    assert [len(b) for b in model.batches] == [1, 2, 1]


def test_a_failing_model_fails_its_batch_only():
    calls = []

    def flaky(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return [im[..., 0] for im in images]

    async def scenario():
        batcher = MicroBatcher(flaky, max_batch=2, max_wait_s=0.2)
        batcher.start()
        results = await asyncio.gather(
            *(batcher.segment(image(2, 2, v)) for v in range(2)), return_exceptions=True
        )
        later = await batcher.segment(image(2, 2, 9))
        await batcher.close()
        return results, later

    results, later = run(scenario)
    assert [str(r) for r in results] == ["out of memory"] * 2 and later[0, 0] == 9


def test_closing_answers_everyone_and_a_closed_batcher_refuses():
    model = Recorder(hold=True)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0)
        with pytest.raises(NotRunning, match="not loaded"):
            await batcher.segment(image(2, 2, 0))
        batcher.start()
        pending = [asyncio.ensure_future(batcher.segment(image(2, 2, v))) for v in range(3)]
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        model.release.set()  # the thread ends its batch; close() waits for it
        await closing
        results = await asyncio.gather(*pending, return_exceptions=True)
        with pytest.raises(NotRunning):
            await batcher.segment(image(2, 2, 0))
        return results

    results = run(scenario)
    assert all(isinstance(r, NotRunning) and "shutting down" in str(r) for r in results)
