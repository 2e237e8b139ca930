"""Judging a tagger: choose its threshold on the validation split, then measure it on the test split."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from landmarks.evaluation import global_average_precision, summarize
from landmarks.inference import SplitResult
from landmarks.openset import Tagger, simulated_unknown_scores
from landmarks.params import TaggingParams
from landmarks.tagging import ThresholdChoice, choose_threshold, false_tag_rate, tag_metrics

DISTRACTORS = "distractors"
UNKNOWN_LANDMARKS = "unknown_landmarks"


def negatives(result: SplitResult, tagger: Tagger, params: TaggingParams) -> dict[str, np.ndarray]:
    """The scores of the photos that must not be tagged: distractors, and known photos with their class hidden."""
    out = {DISTRACTORS: result.scores[~result.known]}
    if params.held_out_classes and result.logits.shape[1] >= 2:
        known = result.subset(result.known)
        simulated = simulated_unknown_scores(torch.from_numpy(known.logits), torch.from_numpy(known.embeddings),
                                             torch.from_numpy(known.labels), tagger)
        out[UNKNOWN_LANDMARKS] = simulated.numpy()
    return {k: v for k, v in out.items() if len(v)}


def choose(val: SplitResult, tagger: Tagger, params: TaggingParams) -> ThresholdChoice:
    """The threshold for `tagger`, chosen on the validation split."""
    known = val.subset(val.known)
    return choose_threshold(known.scores, known.predicted == known.labels, negatives(val, tagger, params),
                            precision=params.precision, max_false_tag_rate=params.max_false_tag_rate)


def test_metrics(test: SplitResult, tagger: Tagger, params: TaggingParams, threshold: float) -> dict[str, Any]:
    """Headline numbers on the test split: the classifier on known photos, the tagger on all of them.

    gap is GLR's Global Average Precision over every test photo, ranked by the open-set score,
    distractors included (their prediction is always wrong) and M counting known photos only.
    """
    known = test.subset(test.known)
    metrics: dict[str, Any] = {k: v for k, v in summarize(known.probs, known.labels).items() if k != "gap"}
    metrics["gap"] = global_average_precision(test.predicted, test.scores, np.where(test.known, test.labels, -1))
    metrics["gap_known"] = global_average_precision(known.predicted, known.scores, known.labels)
    metrics["threshold"] = threshold
    metrics.update(tag_metrics(test.scores, test.predicted, test.labels, threshold))
    metrics["num_distractors"] = int((~test.known).sum())
    unknown = negatives(test, tagger, params).get(UNKNOWN_LANDMARKS)
    metrics["unknown_landmark_tag_rate"] = false_tag_rate(unknown, threshold) if unknown is not None else float("nan")
    return metrics


def tagging_record(choice: ThresholdChoice, test: dict[str, Any], params: TaggingParams, *, num_val: int) -> dict[str, Any]:
    """tagging.json: the decision the exported predictor makes, and what it achieved."""

    def num(v: float) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 5)

    return {
        "score": params.score,
        "neighbours": params.neighbours,
        # exact, not rounded: the predictor compares scores against this very number
        "threshold": choice.threshold,
        "reached": choice.reached,
        "target_precision": params.precision,
        "max_false_tag_rate": params.max_false_tag_rate,
        "val": {"precision": num(choice.precision), "coverage": num(choice.coverage),
                **{f"{k}_tag_rate": num(v) for k, v in choice.false_tag_rates.items()}, "num_photos": num_val},
        "test": {k: num(test[k]) if isinstance(test[k], float) else test[k]
                 for k in ("tag_precision", "coverage", "distractor_tag_rate", "unknown_landmark_tag_rate",
                           "num_test", "num_distractors")},
    }
