"""What a tagging answer is made of, for `landmarks tag` and `landmarks serve` alike: a photo read for the
predictor (from a path or an upload's bytes), and the row each photo gets (a landmark, "no landmark" or
an error), as JSON or CSV. One definition, so the command and the service can never disagree."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from typing import Any

import numpy as np
import torch

from landmarks.batching import PredictionFailed, Result
from landmarks.imageio import DEFAULT_MAX_PIXELS, ImageError, decode_image
from landmarks.predictor_file import LoadedPredictor, display_name

NO_LANDMARK = "no landmark"
MAX_ASPECT = 50  # panoramas are ~10:1; beyond this a file is not a photo we can classify
CATEGORY_FIELDS = ("category", "wikidata_id", "latitude", "longitude")
COLUMNS = ("path", "status", "landmark_id", "name", "hashtag", "confidence", "score", *CATEGORY_FIELDS, "error")
TOP_K = 5
# A JSON row is COLUMNS plus `top5` (the most probable landmarks, what the service's page charts); CSV stays flat.
FIELDS = (*COLUMNS, "top5")


def load_image(source: bytes | str | os.PathLike, *, resize_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode a photo (a path, or the bytes of an upload) into uint8 [3, H, W]. JPEGs are decoded at reduced
    size (draft mode) when they are much bigger than the predictor's resize size. Raises ImageError or OSError."""
    img = decode_image(source, max_pixels=max_pixels, draft_size=resize_size)
    w, h = img.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        # The predictor scales the shorter side up to resize_size: a 1x100000 strip would need gigabytes.
        raise ImageError("bad_shape", f"{w}x{h} pixels: the long side is over {MAX_ASPECT}x the short side")
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def read_image(source: bytes | str | os.PathLike, *, resize_size: int, max_pixels: int) -> torch.Tensor | Exception:
    """load_image, or the ImageError/OSError that says why the file is not a usable photo."""
    try:
        return load_image(source, resize_size=resize_size, max_pixels=max_pixels)
    except (ImageError, OSError) as e:
        return e


def describe_error(e: BaseException) -> str:
    if isinstance(e, PredictionFailed):
        return f"prediction_failed: {e}"
    if isinstance(e, ImageError):
        return str(e)
    if isinstance(e, IsADirectoryError):
        return "not_a_file: is a directory"
    if isinstance(e, FileNotFoundError):
        return "not_found: no such file"
    return f"unreadable: {e.strerror or e}" if isinstance(e, OSError) else f"{type(e).__name__}: {e}"


# ----------------------------------------------------------------------------- outputs

# Letters that Unicode decomposition does not reduce to ASCII.
_ASCII_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
                             "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "Th", "ı": "i"})


def hashtag(name: str) -> str:
    """`Eiffel Tower` -> `#EiffelTower`: ASCII-folded CamelCase, non-alphanumerics removed ("" if nothing is left)."""
    folded = unicodedata.normalize("NFKD", name.translate(_ASCII_FOLD)).encode("ascii", "ignore").decode()
    folded = re.sub(r"['’`]", "", folded)  # St. Peter's -> StPeters, not StPeterS
    tag = "".join(w[0].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", folded))
    return f"#{tag}" if tag else ""


def _blank(value: Any) -> Any:
    return None if value is None or value == "" or (isinstance(value, float) and value != value) else value


def ranked(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most probable classes, most probable first (ties in class order)."""
    return np.argsort(-probs, kind="stable")[:k]


def result_row(path: str | os.PathLike, probs: np.ndarray | None, score: float | None, predictor: LoadedPredictor,
               error: str | None = None) -> dict[str, Any]:
    """One output record: a landmark, "no landmark" (score below the tagging threshold) or an error.

    `top5` lists the most probable landmarks whatever the verdict (a "no landmark" photo still has them)."""
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row["path"] = str(path)
    if probs is None or score is None:
        row.update(status="error", error=error)
        return row
    k = int(np.argmax(probs))
    row.update(status="ok", confidence=round(float(probs[k]), 6), score=round(float(score), 6))
    row["top5"] = [{"landmark_id": int(predictor.classes[j]["landmark_id"]), "name": display_name(predictor.classes[j]),
                    "probability": round(float(probs[j]), 6)} for j in ranked(probs, TOP_K)]
    if score < predictor.threshold:
        row["name"] = NO_LANDMARK
        return row
    c = predictor.classes[k]
    name = display_name(c)
    row.update(landmark_id=int(c["landmark_id"]), name=name, hashtag=hashtag(name))
    row.update({f: _blank(c.get(f)) for f in CATEGORY_FIELDS})
    return row


def row_of(result: Result, predictor: LoadedPredictor) -> dict[str, Any]:
    """The output record of one prediction (or of the error that stopped it), keyed by its path."""
    error = None if result.error is None else describe_error(result.error)
    return result_row(result.key, result.probs, result.score, predictor, error=error)


def format_rows(rows: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()
