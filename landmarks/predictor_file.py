"""The predictor file (models/predictor.pt): its format, how to write it and how to load it.

The file is TorchScript. Its `forward` maps a uint8 RGB batch [B, 3, H, W] of any H, W to class
probabilities [B, C]; its `tag` method returns (probabilities [B, C], open-set score [B]), and a
photo is tagged when its score reaches the threshold in tagging.json (files written before the
open-set score have no `tag`: their score is the top probability). Three JSON records travel
inside it (`torch.jit.load(path, _extra_files={"classes.json": "", ...})`):

- classes.json: the class dicts in output order (landmark_id, name, category info, counts)
- tagging.json: the score, its threshold chosen on the validation split, and what it achieves
- preprocess.json: image_size, resize_size, mean, std

This module is the one owner of that format, and it imports only torch, json and the standard
library, so that whatever serves the predictor (the CLI, a service) needs none of the training code.
"""
from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

if TYPE_CHECKING:
    import numpy as np

CLASSES_FILE, TAGGING_FILE, PREPROCESS_FILE = "classes.json", "tagging.json", "preprocess.json"
EXTRA_FILES = (CLASSES_FILE, TAGGING_FILE, PREPROCESS_FILE)


class PredictorFileError(ValueError):
    """There is no usable predictor at that path or in those bytes: missing, a training checkpoint, no classes."""


@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch's "torch.jit is deprecated" FutureWarnings: TorchScript is still the format that
    loads with torch alone and takes any input size, which is what deployment needs here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=FutureWarning)
        yield


# ----------------------------------------------------------------------------- classes

def display_name(c: dict[str, Any]) -> str:
    """How a class is shown to people: its name, or its landmark id when it has none."""
    return str(c.get("name") or c["landmark_id"])


def display_names(classes: list[dict[str, Any]]) -> list[str]:
    """A unique, readable label per class: its name, with the landmark id added where names repeat."""
    names = [display_name(c) for c in classes]
    counts = Counter(names)
    return [f"{n} ({c['landmark_id']})" if counts[n] > 1 else n for n, c in zip(names, classes)]


# ----------------------------------------------------------------------------- writing

def plain_json(value: Any) -> Any:
    """`value` with numpy scalars made Python numbers and NaN made None, so json.dumps writes valid JSON."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def predictor_bytes(
    predictor: torch.jit.ScriptModule, *, classes: list[dict[str, Any]], tagging: dict[str, Any], preprocess: dict[str, Any]
) -> bytes:
    """The serialised predictor file: the scripted module with classes/tagging/preprocess JSON inside."""
    if len(classes) == 0:
        raise ValueError("a predictor needs at least one class")
    missing = [i for i, c in enumerate(classes) if "landmark_id" not in c or "name" not in c]
    if missing:
        raise ValueError(f"classes {missing[:5]} lack landmark_id or name")
    extra = {
        CLASSES_FILE: json.dumps(plain_json(classes), ensure_ascii=False),
        TAGGING_FILE: json.dumps(plain_json(tagging)),
        PREPROCESS_FILE: json.dumps(plain_json(preprocess)),
    }
    buf = io.BytesIO()
    with quiet_jit():
        torch.jit.save(predictor, buf, _extra_files=extra)
    return buf.getvalue()


# ----------------------------------------------------------------------------- loading

@dataclass
class LoadedPredictor:
    """A loaded predictor file: the module (eval mode, CPU) and its three records."""

    module: torch.jit.ScriptModule
    classes: list[dict[str, Any]]
    tagging: dict[str, Any]
    preprocess: dict[str, Any]

    @property
    def threshold(self) -> float:
        """Tag only predictions whose open-set score reaches this; below, the answer is "no landmark"."""
        value = self.tagging.get("threshold")
        return 0.0 if value is None else float(value)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, 3, H, W] -> (probabilities [B, C], open-set scores [B]) as float64 numpy arrays.

        Predictors exported before the open-set score have no `tag` method; their score is the
        top probability, which is what their threshold was chosen for."""
        if hasattr(self.module, "tag"):
            probs, scores = self.module.tag(batch)
        else:
            probs = self.module(batch)
            scores = probs.max(dim=1).values
        return probs.double().numpy(), scores.double().numpy()


def load_predictor(source: str | os.PathLike | bytes) -> LoadedPredictor:
    """Load a predictor file from a path or from its bytes; PredictorFileError if that is impossible.

    A missing tagging.json (very old files) reads as {}: threshold 0."""
    if isinstance(source, bytes):
        what, stream = "these bytes", io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise PredictorFileError(f"model file {str(path)!r} not found "
                                     "(build it with `dvc repro export_torchscript`, or pass --model)")
        what, stream = str(path), str(path)
    extra = dict.fromkeys(EXTRA_FILES, "")
    try:
        with quiet_jit():
            module = torch.jit.load(stream, map_location="cpu", _extra_files=extra)
        classes = json.loads(extra[CLASSES_FILE])
        tagging = json.loads(extra[TAGGING_FILE] or "{}")
        preprocess = json.loads(extra[PREPROCESS_FILE])
    except (RuntimeError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise PredictorFileError(f"{what} is not a landmarks predictor file ({first}); "
                                 "pass the exported models/predictor.pt, not a training checkpoint") from None
    if not isinstance(classes, list) or not classes:
        raise PredictorFileError(f"{what} is not a landmarks predictor file (no classes inside)")
    return LoadedPredictor(module.eval(), classes, tagging, preprocess)
