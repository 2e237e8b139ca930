"""The tagging decision: the threshold chosen against hand-computed cases, and what it does on a split."""
from __future__ import annotations

import math

import numpy as np
import pytest

from landmarks.params import TaggingParams, parse
from landmarks.tagging import NEVER, ThresholdChoice, choose_threshold, false_tag_rate, tag_metrics

KNOWN = [0.9, 0.8, 0.7, 0.6]
CORRECT = [1, 1, 0, 1]


def choose(known, correct, negatives=None, *, precision: float, rate: float = 1.0) -> ThresholdChoice:
    return choose_threshold(known, correct, negatives or {}, precision=precision, max_false_tag_rate=rate)


def summary(c: ThresholdChoice) -> tuple[float, float, float]:
    return c.threshold, c.precision, c.coverage


def assert_nothing_tagged(c: ThresholdChoice) -> None:
    assert c.threshold == NEVER and c.threshold > 1.0
    assert c.coverage == 0.0 and math.isnan(c.precision) and not c.reached


# ----------------------------------------------------------------------------- precision


def test_without_negatives_precision_alone_decides() -> None:
    assert summary(choose(KNOWN, CORRECT, precision=1.0)) == (0.8, 1.0, 0.5)
    # precision is not monotonic: 0.7 gives 2/3 but 0.6 gives 3/4 again, and the lowest threshold wins
    assert summary(choose(KNOWN, CORRECT, precision=0.7)) == (0.6, 0.75, 1.0)
    assert summary(choose(KNOWN, CORRECT, precision=0.75)) == (0.6, 0.75, 1.0)
    assert summary(choose(KNOWN, CORRECT, precision=0.76)) == (0.8, 1.0, 0.5)
    c = choose(KNOWN, CORRECT, precision=0.76)
    assert c.reached and c.false_tag_rates == {}
    # a kind of negative with no photos constrains nothing
    e = choose(KNOWN, CORRECT, {"distractors": []}, precision=0.7, rate=0.0)
    assert summary(e) == (0.6, 0.75, 1.0) and set(e.false_tag_rates) == {"distractors"}


def test_precision_counts_every_tag_negatives_included() -> None:
    # t=0.9: 1/1; t=0.8: 2/(2+1); t=0.7: 2/(3+1); t=0.6: 3/(4+1), the distractor at 0.85 tagged from 0.8 down
    negatives = {"distractors": [0.85, 0.1]}
    c = choose(KNOWN, CORRECT, negatives, precision=0.6)
    assert summary(c) == (0.6, pytest.approx(3 / 5), 1.0)
    assert c.false_tag_rates == {"distractors": 0.5}
    c = choose(KNOWN, CORRECT, negatives, precision=0.61)
    assert summary(c) == (0.8, pytest.approx(2 / 3), 0.5)
    # without the distractor 0.6 would reach 3/4 >= 0.7; with it only 0.9 does
    assert choose(KNOWN, CORRECT, precision=0.7).threshold == 0.6
    c = choose(KNOWN, CORRECT, negatives, precision=0.7)
    assert summary(c) == (0.9, 1.0, 0.25) and c.false_tag_rates == {"distractors": 0.0}


def test_negatives_of_every_kind_add_up_in_the_precision() -> None:
    # one negative of each kind at 0.65: at t=0.6, 3 correct of 4 known + 2 negatives = 1/2
    known, correct = [0.9, 0.8, 0.6, 0.6], [1, 1, 1, 0]
    one = {"distractors": [0.65]}
    two = {"distractors": [0.65], "unknown_landmarks": [0.65]}
    assert choose(known, correct, one, precision=0.6).threshold == 0.6  # 3/5
    c = choose(known, correct, two, precision=0.6)
    assert summary(c) == (0.8, 1.0, 0.5)
    assert c.false_tag_rates == {"distractors": 0.0, "unknown_landmarks": 0.0}


# ----------------------------------------------------------------------------- false-tag rate


def test_each_kind_of_negative_is_held_to_the_false_tag_rate_on_its_own() -> None:
    known, correct = [0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1]
    distractors = [0.65] + [0.1] * 9  # at t=0.6: 1/10 tagged
    unknown = [0.62, 0.1]  # at t=0.6: 1/2 tagged; pooled with the distractors 2/12 < 0.2
    c = choose(known, correct, {"distractors": distractors}, precision=0.5, rate=0.2)
    assert summary(c) == (0.6, pytest.approx(4 / 5), 1.0) and c.false_tag_rates == {"distractors": 0.1}
    c = choose(known, correct, {"distractors": distractors, "unknown_landmarks": unknown}, precision=0.5, rate=0.2)
    assert summary(c) == (0.7, 1.0, 0.75)
    assert c.false_tag_rates == {"distractors": 0.0, "unknown_landmarks": 0.0}
    # the same unknown landmarks with a looser rate: 1/2 is allowed
    c = choose(known, correct, {"distractors": distractors, "unknown_landmarks": unknown}, precision=0.5, rate=0.5)
    assert c.threshold == 0.6 and c.false_tag_rates == {"distractors": 0.1, "unknown_landmarks": 0.5}


def test_the_false_tag_rate_binds_even_when_precision_is_met() -> None:
    known, correct = [0.9, 0.8, 0.7, 0.6], [1] * 4
    distractors = [0.75, 0.72, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    # precision at 0.6 is 4/6 >= 0.5, but 2 of 10 distractors (0.2) get a tag
    assert choose(known, correct, {"distractors": distractors}, precision=0.5, rate=0.2).threshold == 0.6
    c = choose(known, correct, {"distractors": distractors}, precision=0.5, rate=0.19)
    assert summary(c) == (0.8, 1.0, 0.5) and c.false_tag_rates == {"distractors": 0.0}
    # max_false_tag_rate = 0: no negative may be tagged at all
    assert choose(known, correct, {"distractors": [0.85]}, precision=0.1, rate=0.0).threshold == 0.9
    assert_nothing_tagged(choose(known, correct, {"distractors": [0.95]}, precision=0.1, rate=0.0))


# ----------------------------------------------------------------------------- ties


def test_equal_scores_are_tagged_together() -> None:
    # the first 0.8 alone would be 100% precise, but no threshold separates it from the second
    assert_nothing_tagged(choose([0.8, 0.8, 0.5], [1, 0, 1], precision=1.0))
    assert summary(choose([0.8, 0.8, 0.5], [1, 0, 1], precision=0.5)) == (0.5, pytest.approx(2 / 3), 1.0)
    # a run of equal scores is one candidate whatever the input order
    for known, correct in (([0.9, 0.8, 0.8, 0.8], [1, 1, 0, 0]), ([0.8, 0.8, 0.9, 0.8], [0, 1, 1, 0])):
        assert summary(choose(known, correct, precision=0.75)) == (0.9, 1.0, 0.25)
        assert summary(choose(known, correct, precision=0.5)) == (0.8, 0.5, 1.0)
    # a negative whose score equals the threshold is tagged too (score >= threshold)
    assert_nothing_tagged(choose([0.8], [1], {"distractors": [0.8]}, precision=0.6))
    c = choose([0.8], [1], {"distractors": [0.7999]}, precision=0.6)
    assert summary(c) == (0.8, 1.0, 1.0) and c.false_tag_rates == {"distractors": 0.0}


# ----------------------------------------------------------------------------- unreachable


def test_unreachable_targets_tag_nothing() -> None:
    c = choose([0.9, 0.5], [0, 1], precision=0.9)
    assert_nothing_tagged(c)
    assert c.false_tag_rates == {}
    c = choose([0.9, 0.5], [1, 1], {"distractors": [0.99, 0.2]}, precision=0.9)
    assert_nothing_tagged(c)
    assert c.false_tag_rates == {"distractors": 0.0}
    assert_nothing_tagged(choose([], [], {"distractors": [0.3]}, precision=0.5))
    # NEVER is above every possible score: a cosine or a probability of exactly 1.0 is not tagged
    m = tag_metrics([1.0, 1.0, 0.5], [0, 1, 0], [0, 1, -1], NEVER)
    assert m["coverage"] == 0.0 and m["num_tagged"] == 0 and math.isnan(m["tag_precision"])
    assert m["distractor_tag_rate"] == 0.0
    assert false_tag_rate([1.0], NEVER) == 0.0


# ----------------------------------------------------------------------------- the threshold is a known score


def brute_force(known: np.ndarray, correct: np.ndarray, negatives: dict[str, np.ndarray], precision: float,
                rate: float) -> tuple[float, float]:
    """(coverage, threshold): over every threshold that could matter, the best coverage reaching both targets,
    and the highest threshold giving it; (0, NEVER) if none does."""
    values = np.concatenate([known, *negatives.values()])
    candidates = np.unique(np.concatenate([values, np.nextafter(values, -np.inf), np.nextafter(values, np.inf)]))
    best = (0.0, NEVER)
    for t in candidates:
        tagged = known >= t
        if not tagged.any():
            continue
        neg_tags = sum(int((v >= t).sum()) for v in negatives.values())
        if (correct & tagged).sum() / (tagged.sum() + neg_tags) < precision:
            continue
        if any(len(v) and (v >= t).mean() > rate for v in negatives.values()):
            continue
        cov = tagged.mean()
        if cov > best[0] or (cov == best[0] and t > best[1]):
            best = (cov, float(t))
    return best


def test_the_chosen_threshold_is_the_highest_score_of_the_best_coverage_interval() -> None:
    rng = np.random.default_rng(0)
    reached = 0
    for trial in range(300):
        n = int(rng.integers(1, 12))
        known = rng.integers(0, 10, n) / 10  # coarse: many ties
        correct = rng.random(n) < 0.7
        negatives = {name: rng.integers(0, 10, int(rng.integers(0, 6))) / 10 for name in ("distractors", "unknown")}
        precision = float(rng.choice([0.5, 0.7, 0.9, 1.0]))
        rate = float(rng.choice([0.0, 0.2, 0.5, 1.0]))
        c = choose_threshold(known, correct, negatives, precision=precision, max_false_tag_rate=rate)
        coverage, threshold = brute_force(known, correct, negatives, precision, rate)
        assert (c.coverage, c.threshold) == (pytest.approx(coverage), threshold), trial
        if c.reached:
            reached += 1
            assert c.threshold in set(known.tolist())
            m = tag_metrics(np.concatenate([known, *negatives.values()]),
                            np.concatenate([np.where(correct, 0, 1), np.zeros(sum(map(len, negatives.values())), int)]),
                            np.concatenate([np.zeros(n, int), -np.ones(sum(map(len, negatives.values())), int)]),
                            c.threshold)
            assert m["tag_precision"] == pytest.approx(c.precision) and c.precision >= precision
            expected = {k: false_tag_rate(v, c.threshold) for k, v in negatives.items()}  # nan for an empty kind
            assert c.false_tag_rates == pytest.approx(expected, nan_ok=True)
            assert all(r <= rate for r in c.false_tag_rates.values() if not math.isnan(r))
    assert 50 < reached < 300  # both outcomes were exercised


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kw, match", [
    ({"precision": 0.0}, "precision=0.0"),
    ({"precision": 1.5}, "precision=1.5"),
    ({"precision": float("nan")}, "precision=nan"),
    ({"max_false_tag_rate": -0.1}, "max_false_tag_rate=-0.1"),
    ({"max_false_tag_rate": 1.01}, "max_false_tag_rate=1.01"),
])
def test_choose_threshold_rejects_bad_targets(kw: dict, match: str) -> None:
    args = {"precision": 0.9, "max_false_tag_rate": 0.1, **kw}
    with pytest.raises(ValueError, match=match):
        choose_threshold([0.5], [1], {}, **args)


def test_choose_threshold_needs_an_outcome_per_known_score() -> None:
    with pytest.raises(ValueError, match="equally many"):
        choose_threshold([0.5, 0.6], [1], {}, precision=0.9, max_false_tag_rate=0.1)


@pytest.mark.parametrize("key, value", [
    ("precision", 0), ("precision", 1.2), ("precision", True), ("precision", "high"),
    ("max_false_tag_rate", -0.5), ("max_false_tag_rate", 2), ("max_false_tag_rate", float("nan")),
    ("score", "cosine"), ("neighbours", 0), ("neighbours", 2.0), ("neighbours", True), ("held_out_classes", "yes"),
])
def test_tagging_params_are_validated_with_one_line(key: str, value: object) -> None:
    with pytest.raises(ValueError) as e:
        parse(TaggingParams, "tagging", {key: value})
    assert f"tagging.{key}={value!r}" in str(e.value) and "\n" not in str(e.value)


def test_params_yaml_tagging_section_is_valid_and_complete(real_params: dict) -> None:
    from dataclasses import fields

    section = real_params["tagging"]
    assert set(section) == {f.name for f in fields(TaggingParams)}
    assert parse(TaggingParams, "tagging", section).precision == section["precision"]


# ----------------------------------------------------------------------------- tag_metrics


def test_tag_metrics_on_a_split_with_distractors_by_hand() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    predicted = [0, 1, 1, 2, 0]
    labels = [0, -1, 2, 2, -1]  # photos 1 and 4 are distractors
    # t=0.6: photos 0-3 tagged; all 3 known photos tagged; correct tags: 0 and 3 of 4; distractor 1 of 2
    assert tag_metrics(scores, predicted, labels, 0.6) == {
        "coverage": 1.0, "tag_precision": 0.5, "distractor_tag_rate": 0.5, "num_tagged": 4}
    # t=0.75: photos 0 and 1 tagged; known 1 of 3; correct 1 of 2 tags; distractors 1 of 2
    assert tag_metrics(scores, predicted, labels, 0.75) == {
        "coverage": pytest.approx(1 / 3), "tag_precision": 0.5, "distractor_tag_rate": 0.5, "num_tagged": 2}
    # t=0.95: nothing tagged
    m = tag_metrics(scores, predicted, labels, 0.95)
    assert m["coverage"] == 0.0 and m["distractor_tag_rate"] == 0.0 and m["num_tagged"] == 0
    assert math.isnan(m["tag_precision"])
    # a split without distractors: their rate is undefined
    m = tag_metrics([0.9, 0.4], [1, 1], [1, 0], 0.5)
    assert m["coverage"] == 0.5 and m["tag_precision"] == 1.0 and math.isnan(m["distractor_tag_rate"])
    # a distractor is never a correct tag, whatever class it is predicted as
    assert tag_metrics([0.9], [0], [-1], 0.5)["tag_precision"] == 0.0


def test_false_tag_rate_counts_scores_reaching_the_threshold() -> None:
    assert false_tag_rate([0.5, 0.7, 0.6, 0.1], 0.6) == 0.5
    assert math.isnan(false_tag_rate([], 0.6))
