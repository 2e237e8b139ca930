"""The engine behind `landmarks serve`, without the HTTP: its options, admission and the batching worker.

Images from concurrent requests share forward passes. Requests hand decoded images to
`BatchWorker.submit`, which returns a concurrent.futures.Future at once, and one thread runs the
predictor, so the event loop never waits for inference. Waiting images are grouped by size (a batch
must share H and W): a group runs as soon as it holds `max_batch` images, or once its oldest image
has waited `max_wait_ms`, oldest group first. Each batch goes through batching.predict_in_batches, so
an image that breaks the predictor fails alone and every result is the one `landmarks tag` gives.

`Admission` bounds what may wait: a request reserves its images and their pixels before anything is
decoded, and is turned away (HTTP 503) while the budget is spent, so memory stays bounded under any load.

This module needs neither FastAPI nor uvicorn, so the CLI can read the defaults without importing them.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from landmarks.batching import DEFAULT_BATCH_SIZE, Predict, PredictionFailed, Result, predict_in_batches
from landmarks.imageio import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ServeOptions:
    """The service's limits. Every one bounds time or memory; ServeOptions() are the CLI's defaults."""

    max_body_mb: float = 20.0  # a request body over this is refused with 413 while it arrives
    max_batch: int = DEFAULT_BATCH_SIZE  # images per forward pass
    # How long the oldest waiting image waits for same-size partners. Under load batches fill while the
    # previous one runs, so this only costs latency when traffic is light.
    max_wait_ms: float = 10.0
    # Images admitted and not yet answered (also the most files one request may carry): 32 clients with
    # one photo each fit twice.
    max_queue: int = 64
    # Their decoded pixels: 200 Mpx is 600 MB of RGB. Raised to max_pixels if that is larger, so that any
    # image decode_image accepts can be admitted on its own.
    max_queue_pixels: int = 200_000_000
    max_pixels: int = DEFAULT_MAX_PIXELS  # per image: decode_image's decompression-bomb limit
    decode_threads: int = 2  # photos decoded at once (decoding is the other half of the CPU work)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_queue_pixels", "max_pixels", "decode_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_body_mb > 0 or not self.max_wait_ms >= 0:
            raise ValueError(f"max_body_mb must be > 0 and max_wait_ms >= 0, got {self.max_body_mb}, {self.max_wait_ms}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def pixel_budget(self) -> int:
        return max(self.max_queue_pixels, self.max_pixels)


class Admission:
    """Images and decoded pixels admitted and not yet answered.

    Only the event loop calls it (one thread), so check-and-reserve needs no lock."""

    def __init__(self, max_images: int, max_pixels: int) -> None:
        self.max_images, self.max_pixels = max_images, max_pixels
        self.images, self.pixels = 0, 0

    def admit(self, images: int, pixels: int) -> bool:
        """Reserve room for a request, or False if it does not fit now (it fits later if it fits an idle service)."""
        if self.images + images > self.max_images or self.pixels + pixels > self.max_pixels:
            return False
        self.images += images
        self.pixels += pixels
        return True

    def release(self, images: int, pixels: int) -> None:
        self.images -= images
        self.pixels -= pixels


@dataclass
class _Job:
    key: Any
    image: torch.Tensor
    future: Future = field(default_factory=Future)
    since: float = field(default_factory=time.monotonic)


class BatchWorker:
    """One inference thread that runs same-size images from any number of requests together."""

    def __init__(self, predict: Predict, *, max_batch: int = DEFAULT_BATCH_SIZE, max_wait_ms: float = 10.0) -> None:
        self._predict = predict
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self._groups: dict[tuple[int, int], deque[_Job]] = {}  # per image size, oldest first
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Run what is still waiting without waiting for partners, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def submit(self, key: Any, image: torch.Tensor) -> Future[Result]:
        """Queue a uint8 [3, H, W] image; the future's Result carries `key`. It never raises: a failure is
        the Result's error (batching.PredictionFailed), as in `landmarks tag`."""
        job = _Job(key, image)
        with self._cond:
            if self._stopping or self._thread is None:
                job.future.set_result(Result(key, None, None, PredictionFailed(RuntimeError("the service is stopping"))))
                return job.future
            self._groups.setdefault((image.shape[1], image.shape[2]), deque()).append(job)
            self._cond.notify()
        return job.future

    def _take(self) -> list[_Job] | None:
        """The next batch, waiting as long as the rules above say; None when stopped and drained."""
        with self._cond:
            while True:
                if not self._groups:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                oldest = min(self._groups, key=lambda size: self._groups[size][0].since)
                due = self._groups[oldest][0].since + self.max_wait
                full = [size for size, jobs in self._groups.items() if len(jobs) >= self.max_batch]
                now = time.monotonic()
                if now >= due or self._stopping or oldest in full:
                    size = oldest
                elif full:  # never idle while a whole batch is ready
                    size = full[0]
                else:
                    self._cond.wait(due - now)
                    continue
                jobs = self._groups[size]
                batch = [jobs.popleft() for _ in range(min(self.max_batch, len(jobs)))]
                if not jobs:
                    del self._groups[size]
                return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                # All one size, batch_size = their number: exactly one forward pass (retried one by one
                # only if it fails); no pixel limit, since Admission already bounds what waits.
                results = list(predict_in_batches(self._predict, [(i, job.image) for i, job in enumerate(jobs)],
                                                  batch_size=len(jobs), max_pending_pixels=sys.maxsize))
            except Exception as e:  # a predictor that raises something odd fails these images, not the worker
                results = [Result(i, None, None, PredictionFailed(e)) for i in range(len(jobs))]
            for result in results:
                job = jobs[result.key]
                job.future.set_result(result._replace(key=job.key))
