"""Which open-set score tells known landmarks from everything else? Measured on the pipeline's own data.

Runs a trained checkpoint (default models/transfer.pt) once over the validation and test splits of
the current `dvc repro` output, then compares the scores side by side on the same outputs:
  msp      top softmax probability (the classic baseline)
  energy   logsumexp of the logits (Liu et al. 2020)
  knn1/3/5 mean cosine similarity to the 1/3/5 nearest training photos of the predicted class
  knn_msp  knn3 x msp
For each: AUROC of known test photos against test distractors and against simulated unknown
landmarks (each class hidden in turn), and what tagging does at the threshold that
landmarks.assessment would choose on the validation split with the params' precision and
max_false_tag_rate (coverage of known photos, rates of distractors and unknown landmarks tagged).

    python bench/bench_open_set.py [--model models/transfer.pt] [--splits data/splits] [--images data/images]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landmarks.assessment import DISTRACTORS, UNKNOWN_LANDMARKS, negatives  # noqa: E402
from landmarks.params import load_params  # noqa: E402
from landmarks.checkpoint import load_checkpoint  # noqa: E402
from landmarks.data import read_split  # noqa: E402
from landmarks.inference import SplitResult, run_split  # noqa: E402
from landmarks.openset import build_tagger, open_set_scores  # noqa: E402
from landmarks.tagging import choose_threshold, false_tag_rate  # noqa: E402

METHODS = {"msp": ("msp", 1), "energy": ("energy", 1), "knn1": ("knn", 1), "knn3": ("knn", 3), "knn5": ("knn", 5),
           "knn_msp": ("knn_msp", 3)}


def rescore(result: SplitResult, tagger, method: str, k: int) -> SplitResult:
    """The same photos scored with another method (energy exists here only, for comparison)."""
    logits, emb = torch.from_numpy(result.logits), torch.from_numpy(result.embeddings)
    if method == "energy":
        scores = torch.logsumexp(logits, dim=1)
    else:
        tagger.score, tagger.k = method, k
        scores = open_set_scores(logits, emb, tagger.gallery, tagger.gallery_labels, method, k)[1]
    return SplitResult(result.paths, result.labels, result.logits, result.embeddings, result.probs, scores.numpy())


def auroc(known: np.ndarray, negative: np.ndarray | None) -> float:
    if negative is None or not len(negative):
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(negative))], np.r_[known, negative]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/transfer.pt")
    parser.add_argument("--splits", default="data/splits")
    parser.add_argument("--images", default="data/images")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    if not Path(args.model).is_file():
        print(f"skipped: {args.model} not found; run `make repro` (or pass --model) first")
        return
    base = load_params(args.params).tagging
    model, ckpt = load_checkpoint(args.model)
    tagger = build_tagger(model, ckpt, score="knn", k=3)
    ids = [c["landmark_id"] for c in ckpt["classes"]]
    val, test = (run_split(tagger, read_split(args.splits, s), args.images, ids, ckpt["preprocess"], batch_size=32,
                           device="cpu", desc=s) for s in ("val", "test"))
    print(f"{args.model}: {len(ckpt['classes'])} classes; test: {int(test.known.sum())} known photos, "
          f"{int((~test.known).sum())} distractors; threshold for precision {base.precision}, "
          f"max false-tag rate {base.max_false_tag_rate}")
    print(f"{'score':<9}{'AUROC distr':>12}{'AUROC unkn':>11}{'coverage':>10}{'distr tagged':>13}{'unkn tagged':>12}")
    for name, (method, k) in METHODS.items():
        v, t = rescore(val, tagger, method, k), rescore(test, tagger, method, k)
        p = replace(base, score="knn" if method == "energy" else method, neighbours=k)
        tagger.score, tagger.k = ("msp", 1) if method == "energy" else (method, k)
        neg_v, neg_t = negatives(v, tagger, p), negatives(t, tagger, p)
        if method == "energy":  # hidden-class energy: logsumexp without the hidden logit
            neg_v.pop(UNKNOWN_LANDMARKS, None), neg_t.pop(UNKNOWN_LANDMARKS, None)
        known_v = v.subset(v.known)
        choice = choose_threshold(known_v.scores, known_v.predicted == known_v.labels, neg_v,
                                  precision=p.precision, max_false_tag_rate=p.max_false_tag_rate)
        known_t = t.scores[t.known]
        cover = float((known_t >= choice.threshold).mean())
        rates = [false_tag_rate(neg_t.get(key, []), choice.threshold) for key in (DISTRACTORS, UNKNOWN_LANDMARKS)]
        print(f"{name:<9}{auroc(known_t, neg_t.get(DISTRACTORS)):>12.3f}{auroc(known_t, neg_t.get(UNKNOWN_LANDMARKS)):>11.3f}"
              f"{cover:>10.3f}{rates[0]:>13.3f}{rates[1]:>12.3f}")


if __name__ == "__main__":
    main()
