"""Batched prediction: same-size batches, results in input order, a failing batch retried one by one, bounded memory."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
import torch

from landmarks.batching import MAX_PENDING_BATCHES, PredictionFailed, Result, predict_in_batches


def image(h: int, w: int, value: int) -> torch.Tensor:
    """A uint8 [3, h, w] image whose first pixel is `value` (the fake predictor's score)."""
    x = torch.full((3, h, w), 100, dtype=torch.uint8)
    x[0, 0, 0] = value
    return x


class FakePredictor:
    """Scores each image by its first pixel and records the batches; any batch holding a pixel 255 fails."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(tuple(batch.shape))
        first = batch[:, 0, 0, 0].double()
        if (first == 255).any():
            raise RuntimeError("the model choked\nsecond line of the message")
        probs = torch.stack([first / 255, 1 - first / 255], dim=1)
        return probs.numpy(), first.numpy()


def test_results_come_in_input_order_from_same_size_batches() -> None:
    sizes = [(4, 6), (6, 4), (4, 6), (5, 5), (4, 6), (6, 4), (7, 3), (4, 6)]
    bad_file = OSError("unreadable")
    items: list[tuple[Any, Any]] = [(f"img{i}", image(h, w, 10 + i)) for i, (h, w) in enumerate(sizes)]
    items.insert(3, ("broken", bad_file))
    predict = FakePredictor()
    results = list(predict_in_batches(predict, items, batch_size=2))
    assert [r.key for r in results] == [key for key, _ in items]
    assert all(isinstance(r, Result) for r in results)
    broken = results[3]
    assert broken.error is bad_file and broken.probs is None and broken.score is None
    ok = [r for r in results if r.key != "broken"]
    assert [r.score for r in ok] == [10.0 + i for i in range(len(sizes))] and all(r.error is None for r in ok)
    assert all(isinstance(r.score, float) for r in ok)
    np.testing.assert_allclose(ok[0].probs, [10 / 255, 1 - 10 / 255])
    # full buckets run as soon as they fill, the rest at the end, in the order their sizes first came
    assert predict.batches == [(2, 3, 4, 6), (2, 3, 6, 4), (2, 3, 4, 6), (1, 3, 5, 5), (1, 3, 7, 3)]


def test_a_failing_batch_is_retried_one_by_one_so_only_the_culprit_fails() -> None:
    values = [1, 2, 255, 4, 5, 6]
    predict = FakePredictor()
    results = list(predict_in_batches(predict, [(v, image(4, 4, v)) for v in values], batch_size=4))
    assert [r.key for r in results] == values
    culprit = results[2]
    assert isinstance(culprit.error, PredictionFailed) and isinstance(culprit.error, RuntimeError)
    assert str(culprit.error) == "the model choked" and isinstance(culprit.error.__cause__, RuntimeError)
    assert culprit.probs is None and culprit.score is None
    assert [r.score for r in results if r.key != 255] == [1.0, 2.0, 4.0, 5.0, 6.0]
    # the batch of four failed, then its images ran alone; the last two made a batch of their own
    assert [b[0] for b in predict.batches] == [4, 1, 1, 1, 1, 2]


def test_other_exceptions_are_not_taken_for_a_bad_image() -> None:
    def broken(batch: torch.Tensor) -> Any:
        raise TypeError("a bug in the caller")

    with pytest.raises(TypeError, match="a bug"):
        list(predict_in_batches(broken, [("a", image(4, 4, 1))]))


def counted(items: list[tuple[Any, Any]], consumed: list[int]) -> Iterator[tuple[Any, Any]]:
    for item in items:
        consumed[0] += 1
        yield item


def test_waiting_images_are_bounded_and_results_stream() -> None:
    # every image a different size: nothing ever fills a batch, so only the memory bound runs them
    items = [(i, image(4, 4 + i, i)) for i in range(50)]
    consumed = [0]
    results = predict_in_batches(FakePredictor(), counted(items, consumed), batch_size=2)
    first = next(results)
    assert first.key == 0 and consumed[0] == MAX_PENDING_BATCHES * 2
    assert [r.key for r in results] == list(range(1, 50))
    # a pixel budget: two 100x100 images reach 15,000 pixels, so they run before a third is read
    big = [(i, image(100, 100 + i, i)) for i in range(5)]
    consumed = [0]
    results = predict_in_batches(FakePredictor(), counted(big, consumed), batch_size=8, max_pending_pixels=15_000)
    assert next(results).key == 0 and consumed[0] == 2


def test_single_items_and_bad_batch_sizes() -> None:
    (result,) = predict_in_batches(FakePredictor(), [("only", image(3, 3, 7))], batch_size=8)
    assert (result.key, result.score, result.error) == ("only", 7.0, None)
    assert list(predict_in_batches(FakePredictor(), [])) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(predict_in_batches(FakePredictor(), [], batch_size=0))
