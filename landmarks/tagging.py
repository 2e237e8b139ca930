"""The tagging decision: which open-set score a prediction needs before it becomes a tag.

A wrong tag is worse than no tag, and most photos a platform sees show no landmark of the class
list. So the threshold is chosen on a validation split that holds such photos ("negatives"):

- distractors: photos with no known landmark (synthetic scenes, a folder's `_no_landmark/`,
  GLDv2's non-landmark test images);
- simulated unknown landmarks: each known class in turn is hidden from the model (its logit and
  its gallery rows), and its validation photos are scored against the other classes alone, as
  photos of a landmark outside the class list would be.

The threshold is the lowest one (most known landmarks tagged) at which (a) the precision of all
tags given, negatives included, reaches `precision`, and (b) at most `max_false_tag_rate` of each
kind of negative gets a tag. (b) does not depend on how many negatives the split happens to hold,
which is what a platform's mostly-negative traffic needs. Pure numpy; the scores come from
landmarks.openset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

NEVER = math.nextafter(1.0, 2.0)  # above every possible score (cosines and probabilities are <= 1): tags nothing


@dataclass(frozen=True)
class ThresholdChoice:
    """A score threshold and what it achieves on the data it was chosen on."""

    threshold: float
    precision: float  # of all tags given; nan when nothing is tagged
    coverage: float  # share of known-landmark photos tagged (correctly or not)
    false_tag_rates: dict[str, float]  # per kind of negative: share that got a tag

    @property
    def reached(self) -> bool:
        return self.coverage > 0


def _as_scores(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def choose_threshold(
    known_scores: Any, known_correct: Any, negatives: dict[str, Any], *, precision: float, max_false_tag_rate: float
) -> ThresholdChoice:
    """The threshold with the most known photos tagged subject to the precision and false-tag-rate targets.

    Candidates are the known photos' own scores (tag when score >= threshold): between two of them
    coverage cannot change, and the highest threshold of such an interval tags the fewest negatives.
    Photos with equal scores are tagged or not together. Unreachable targets give NEVER (tag nothing).
    """
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"precision={precision!r} must be in (0, 1]")
    if not 0.0 <= max_false_tag_rate <= 1.0:
        raise ValueError(f"max_false_tag_rate={max_false_tag_rate!r} must be in [0, 1]")
    known = _as_scores(known_scores)
    correct = np.asarray(known_correct, dtype=bool).reshape(-1)
    if len(known) != len(correct):
        raise ValueError(f"need equally many known scores and outcomes, got {len(known)} and {len(correct)}")
    negs = {name: np.sort(_as_scores(v)) for name, v in negatives.items()}
    nothing = ThresholdChoice(NEVER, float("nan"), 0.0, {name: 0.0 for name in negs})
    if len(known) == 0:
        return nothing
    order = np.argsort(-known, kind="stable")
    known_sorted, correct_sorted = known[order], correct[order]
    # candidate i: threshold known_sorted[i], valid only at the last of a run of equal scores
    last = np.append(known_sorted[1:] != known_sorted[:-1], True)
    tagged_known = np.arange(1, len(known) + 1)
    tagged_correct = np.cumsum(correct_sorted)
    tagged_negative = np.zeros(len(known))
    ok = last.copy()
    for sorted_neg in negs.values():
        # negatives with score >= threshold: len - (number strictly below)
        count = len(sorted_neg) - np.searchsorted(sorted_neg, known_sorted, side="left")
        tagged_negative += count
        if len(sorted_neg):
            ok &= count / len(sorted_neg) <= max_false_tag_rate
    prec = tagged_correct / (tagged_known + tagged_negative)
    ok &= prec >= precision
    feasible = np.flatnonzero(ok)
    if len(feasible) == 0:
        return nothing
    i = feasible[-1]
    t = float(known_sorted[i])
    return ThresholdChoice(t, float(prec[i]), float(tagged_known[i] / len(known)),
                           {name: false_tag_rate(v, t) for name, v in negs.items()})


def false_tag_rate(negative_scores: Any, threshold: float) -> float:
    """Share of negative photos whose score reaches the threshold (nan for none)."""
    s = _as_scores(negative_scores)
    return float((s >= threshold).mean()) if len(s) else float("nan")


def tag_metrics(scores: Any, predicted: Any, labels: Any, threshold: float) -> dict[str, float | int]:
    """What tagging at `threshold` does on a labelled split (label < 0: a distractor).

    coverage: share of known-landmark photos tagged; tag_precision: correct tags / all tags
    (nan if none); distractor_tag_rate: share of distractors tagged (nan if the split has none).
    """
    s = _as_scores(scores)
    pred = np.asarray(predicted).reshape(-1)
    true = np.asarray(labels).reshape(-1)
    tagged = s >= threshold
    known = true >= 0
    n_tags = int(tagged.sum())
    return {
        "coverage": float(tagged[known].mean()) if known.any() else float("nan"),
        "tag_precision": float((tagged & known & (pred == true)).sum() / n_tags) if n_tags else float("nan"),
        "distractor_tag_rate": float(tagged[~known].mean()) if (~known).any() else float("nan"),
        "num_tagged": n_tags,
    }
