"""Predicting many photos in batches: same-size images share a forward pass, results come back in order.

The predictor takes any H, W, but a batch must share them. `predict_in_batches` therefore keeps
decoded images in per-size buckets and runs a bucket when it holds `batch_size` images (camera
photos mostly share a size); too many waiting images (count or pixels) run every bucket, which
bounds memory. Each image is preprocessed exactly as on its own (no extra resize), so batched
results equal one-at-a-time results. If a batch fails, its images are retried one by one, so only
the culprit fails.

It knows nothing of files, argparse or output formats: items are (key, image or error) pairs, from
a folder walk (the CLI) or from memory (a service), and the key comes back with each result.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import torch

if TYPE_CHECKING:
    import numpy as np

# Measured with bench/bench_predictor.py (2-core CPU, 1 thread): batches of 8 tag ~40% faster
# than one image at a time, while batches of 32 are slower per image than single images.
DEFAULT_BATCH_SIZE = 8
# Decoded images waiting for a same-size batch partner are all run past these limits (memory bound).
MAX_PENDING_BATCHES = 4  # times batch_size
MAX_PENDING_PIXELS = 64_000_000

# uint8 [B, 3, H, W] -> (probabilities [B, C], open-set scores [B]), e.g. a predictor_file.LoadedPredictor.
Predict = Callable[[torch.Tensor], tuple[Any, Any]]
# A uint8 [3, H, W] image, or why there is none (e.g. the decoding error), which is passed through.
Item = tuple[Any, torch.Tensor | BaseException]


class PredictionFailed(RuntimeError):
    """The predictor raised on this image, on its own; the message is the first line of what it raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__((str(cause).strip().splitlines() or [type(cause).__name__])[0])
        self.__cause__ = cause


class Result(NamedTuple):
    """One input's outcome: probabilities [C] and score, or the error (the input's own, or PredictionFailed)."""

    key: Any
    probs: np.ndarray | None
    score: float | None
    error: BaseException | None


def _run_batch(predict: Predict, items: Sequence[tuple[Any, torch.Tensor]]) -> list[Result]:
    """Predict same-size images together; if the batch fails, retry one by one so only the culprit fails."""
    try:
        probs, scores = predict(torch.stack([x for _, x in items]))
    except RuntimeError as e:
        if len(items) == 1:
            return [Result(items[0][0], None, None, PredictionFailed(e))]
        return [result for item in items for result in _run_batch(predict, [item])]
    return [Result(key, p, float(s), None) for (key, _), p, s in zip(items, probs, scores)]


def predict_in_batches(
    predict: Predict, items: Iterable[Item], *, batch_size: int = DEFAULT_BATCH_SIZE,
    max_pending_pixels: int = MAX_PENDING_PIXELS,
) -> Iterator[Result]:
    """One Result per item, in input order, as soon as it and every earlier one are known.

    `items` is consumed lazily, so only the images waiting for a batch partner are held in memory:
    at most MAX_PENDING_BATCHES * batch_size of them, and about `max_pending_pixels` pixels."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    done: dict[int, Result] = {}  # finished, waiting for an earlier item
    pending: dict[tuple[int, int], list[tuple[int, Any, torch.Tensor]]] = {}  # per size: (index, key, image)
    waiting, waiting_pixels, next_out = 0, 0, 0

    def run(bucket: list[tuple[int, Any, torch.Tensor]]) -> None:
        for (i, _, _), result in zip(bucket, _run_batch(predict, [(key, x) for _, key, x in bucket])):
            done[i] = result

    for i, (key, image) in enumerate(items):
        if not isinstance(image, torch.Tensor):
            done[i] = Result(key, None, None, image)
        else:
            size = (image.shape[1], image.shape[2])
            bucket = pending.setdefault(size, [])
            bucket.append((i, key, image))
            waiting += 1
            waiting_pixels += size[0] * size[1]
            if len(bucket) >= batch_size:
                run(pending.pop(size))
                waiting -= len(bucket)
                waiting_pixels -= len(bucket) * size[0] * size[1]
            elif waiting >= MAX_PENDING_BATCHES * batch_size or waiting_pixels >= max_pending_pixels:
                for bucket in pending.values():
                    run(bucket)
                pending.clear()
                waiting, waiting_pixels = 0, 0
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1
    for bucket in pending.values():
        run(bucket)
    yield from (done[i] for i in sorted(done))
