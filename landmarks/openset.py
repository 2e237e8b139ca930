"""Open-set recognition: does a photo show one of the model's landmarks at all?

A softmax always sums to 1 over the known landmarks, so a photo of anything else still gets a
confident-looking answer. The tagger therefore scores each prediction by how much the photo looks
like the training photos of the landmark it predicts (recognition by retrieval, as the Google
Landmark Recognition winners verified their predictions):

    knn:     the mean cosine similarity between the photo's embedding (what the classifier's last
             Linear layer reads) and the K most similar training embeddings of the predicted class.
    msp:     the maximum softmax probability (the classic baseline, kept for comparison).
    knn_msp: their product (knn clipped at 0): a prediction must be both confident and look
             like the training photos.

A photo is tagged only when its score reaches the threshold `evaluate` chose on a validation split
that holds distractors. The functions here are TorchScript-compatible: the exported predictor
runs this very code, so evaluation and deployment make the same decision.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from landmarks.models import EmbeddingNet, split_at_last_linear
from landmarks.params import SCORES

DEFAULT_K = 3
GALLERY_DTYPE = torch.float16  # halves the checkpoint; similarities need no more precision


def knn_similarity(
    embeddings: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor, predicted: torch.Tensor, k: int
) -> torch.Tensor:
    """[B] mean cosine similarity of each embedding to its k nearest gallery rows of its predicted class.

    `gallery` rows are L2-normalised; a class with fewer than k rows averages over the rows it has.
    """
    sim = (F.normalize(embeddings.float(), dim=1) @ gallery.float().t()).clamp(-1.0, 1.0)
    same = gallery_labels.unsqueeze(0) == predicted.unsqueeze(1)
    sim = sim.masked_fill(~same, -3.0)
    top = sim.topk(min(k, sim.size(1)), dim=1).values
    valid = top > -2.0
    return (top * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)


def open_set_scores(
    logits: torch.Tensor, embeddings: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor,
    score: str, k: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(probabilities [B, C], open-set score [B]) from the classifier's logits and embeddings."""
    probs = torch.softmax(logits.float(), dim=-1)
    top, predicted = probs.max(dim=1)
    if score == "msp":
        return probs, top
    knn = knn_similarity(embeddings, gallery, gallery_labels, predicted, k)
    if score == "knn_msp":
        return probs, knn.clamp(min=0.0) * top
    return probs, knn


class Tagger(nn.Module):
    """Normalised images [B, 3, S, S] -> (probabilities [B, C], open-set score [B])."""

    def __init__(self, net: EmbeddingNet, gallery: torch.Tensor, gallery_labels: torch.Tensor, *, score: str, k: int) -> None:
        super().__init__()
        check_score(score, k)
        self.net = net
        self.register_buffer("gallery", F.normalize(gallery.float(), dim=1))
        self.register_buffer("gallery_labels", gallery_labels.long())
        self.score = score
        self.k = int(k)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits, embeddings = self.net(x)
        return open_set_scores(logits, embeddings, self.gallery, self.gallery_labels, self.score, self.k)


def check_score(score: str, k: int) -> None:
    """ValueError unless `score` is one of SCORES and k >= 1."""
    if score not in SCORES:
        raise ValueError(f"score={score!r} is not valid; choose one of: {', '.join(SCORES)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} is not valid; use an integer >= 1")


def gallery_record(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a checkpoint stores for the knn score: the training embeddings and their class indices."""
    if len(embeddings) != len(labels) or len(embeddings) == 0:
        raise ValueError(f"a gallery needs as many labels as embeddings (>0), got {len(embeddings)} and {len(labels)}")
    return {"embeddings": F.normalize(embeddings.float(), dim=1).to(GALLERY_DTYPE), "labels": labels.long()}


def build_tagger(model: nn.Module, ckpt: dict[str, Any], *, score: str, k: int) -> Tagger:
    """The tagger of a loaded checkpoint (eval mode). Checkpoints without a gallery support only `msp`."""
    gallery = ckpt.get("gallery")
    if gallery is None:
        if score != "msp":
            raise ValueError("this checkpoint has no gallery of training embeddings; retrain it, or use score=msp")
        dim = 1
        gallery = {"embeddings": torch.zeros(1, dim), "labels": torch.zeros(1, dtype=torch.long)}
    return Tagger(split_at_last_linear(model), gallery["embeddings"], gallery["labels"], score=score, k=k).eval()


@torch.no_grad()
def simulated_unknown_scores(
    logits: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, tagger: Tagger
) -> torch.Tensor:
    """Scores of known photos as if their landmark were outside the class list.

    For each class c in `labels`, its photos are scored with c hidden: its logit can't win and its
    gallery rows are left out. Honest for a frozen backbone (its embedding never saw the classes);
    optimistic for a fine-tuned one, whose embedding was trained to set the hidden class apart.
    """
    if logits.size(1) < 2:
        raise ValueError("simulating unknown landmarks needs at least two classes")
    out = torch.empty(len(labels))
    for c in labels.unique().tolist():
        rows = labels == c
        masked = logits[rows].clone()
        masked[:, c] = float("-inf")
        keep = tagger.gallery_labels != c
        if tagger.score != "msp" and not keep.any():
            raise ValueError(f"the gallery has no photo outside class {c} to compare with")
        _, score = open_set_scores(masked, embeddings[rows], tagger.gallery[keep], tagger.gallery_labels[keep],
                                   tagger.score, tagger.k)
        out[rows] = score
    return out
