"""The deployable predictor: one TorchScript file that maps uint8 photos to class probabilities.

The file needs nothing but torch to load and run. Its forward takes a uint8 RGB tensor
[B, 3, H, W] of any H, W, applies `preprocess_uint8` (the very function evaluation uses), the
network and a softmax, and returns probabilities [B, C]. Its `tag` method returns
(probabilities [B, C], open-set score [B]): the score of landmarks.openset, computed against the
gallery of training embeddings the file carries; a photo is tagged when score >= the threshold
in tagging.json. Three JSON files travel inside it
(`torch.jit.load(path, _extra_files={"classes.json": "", ...})`):

- classes.json: the class dicts in output order (landmark_id, name, category info, counts)
- tagging.json: the score, its threshold chosen on the validation split, and what it achieves
- preprocess.json: image_size, resize_size, mean, std
"""
from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import torch
from torch import nn

from landmarks.files import atomic_write_bytes
from landmarks.openset import Tagger, open_set_scores
from landmarks.transforms import preprocess_uint8

EXTRA_FILES = ("classes.json", "tagging.json", "preprocess.json")
# Largest allowed |predictor - eager model| over the probabilities of the check images.
TOLERANCE = 1e-5
# Modules the deployed file must not need: only torch may be imported to use it.
FORBIDDEN_MODULES = ("landmarks", "torchvision", "timm")


@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch's "torch.jit is deprecated" FutureWarnings: TorchScript is still the format that
    loads with torch alone and takes any input size, which is what deployment needs here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=FutureWarning)
        yield


class Predictor(nn.Module):
    """uint8 RGB [B, 3, H, W] (any H, W) -> probabilities [B, C]; `tag` adds the open-set score."""

    def __init__(self, network: nn.Module, tagger: Tagger, image_size: int, resize_size: int, mean: List[float],
                 std: List[float]) -> None:
        super().__init__()
        self.network = network  # normalised images -> (logits, embeddings)
        self.register_buffer("gallery", tagger.gallery.clone())
        self.register_buffer("gallery_labels", tagger.gallery_labels.clone())
        self.score = tagger.score
        self.k = tagger.k
        self.image_size = int(image_size)
        self.resize_size = int(resize_size)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tag(x)[0]

    @torch.jit.export
    def tag(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [B, C], open-set score [B]); tag a photo when its score >= the threshold."""
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError("expected a uint8 RGB batch of shape [B, 3, H, W]")
        if x.dtype != torch.uint8:
            raise ValueError("expected dtype uint8 (0..255 RGB pixels)")
        logits, embeddings = self.network(preprocess_uint8(x, self.image_size, self.resize_size, self.mean, self.std))
        return open_set_scores(logits, embeddings, self.gallery, self.gallery_labels, self.score, self.k)


def build_predictor(tagger: Tagger, preprocess: dict[str, Any]) -> torch.jit.ScriptModule:
    """Trace the tagger's network (eval mode, CPU) at the checkpoint's image size and script the uint8
    wrapper around it. Tracing at one size is exact because preprocess_uint8 always yields image_size x image_size."""
    tagger = tagger.eval().cpu()
    size = int(preprocess["image_size"])
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), quiet_jit():
        network = torch.jit.trace(tagger.net, example)
        wrapper = Predictor(network, tagger, preprocess["image_size"], preprocess["resize_size"], preprocess["mean"],
                            preprocess["std"])
        return torch.jit.script(wrapper.eval())


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
    """The serialised predictor file, with classes/tagging/preprocess JSON inside."""
    if len(classes) == 0:
        raise ValueError("a predictor needs at least one class")
    missing = [i for i, c in enumerate(classes) if "landmark_id" not in c or "name" not in c]
    if missing:
        raise ValueError(f"classes {missing[:5]} lack landmark_id or name")
    extra = {
        "classes.json": json.dumps(plain_json(classes), ensure_ascii=False),
        "tagging.json": json.dumps(plain_json(tagging)),
        "preprocess.json": json.dumps(plain_json(preprocess)),
    }
    buf = io.BytesIO()
    with quiet_jit():
        torch.jit.save(predictor, buf, _extra_files=extra)
    return buf.getvalue()


def load_predictor_bytes(data: bytes) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """(module, {name: parsed JSON}) from serialised predictor bytes."""
    extra = {name: "" for name in EXTRA_FILES}
    with quiet_jit():
        module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    return module, {name: json.loads(extra[name]) for name in EXTRA_FILES}


@torch.no_grad()
def max_difference(predictor: Any, tagger: Tagger, preprocess: dict[str, Any], images: list[torch.Tensor]) -> float:
    """Largest difference between predictor.tag(x) and the eager tagger on preprocess_uint8(x), over the
    probabilities and the open-set scores of uint8 [3, H, W] images, one at a time."""
    tagger = tagger.eval().cpu()
    worst = 0.0
    for img in images:
        x = img.unsqueeze(0)
        expected = tagger(preprocess_uint8(x, **preprocess))
        got = predictor.tag(x)
        worst = max(worst, *(float((g - e).abs().max()) for g, e in zip(got, expected)))
    return worst


# Runs in a bare interpreter: loads the file with torch alone, runs a batch, and proves nothing else was imported.
FRESH_PROCESS_SCRIPT = """
import json, sys
import torch
path, num_classes = sys.argv[1], int(sys.argv[2])
extra = {name: "" for name in ("classes.json", "tagging.json", "preprocess.json")}
m = torch.jit.load(path, map_location="cpu", _extra_files=extra)
classes = json.loads(extra["classes.json"])
if len(classes) != num_classes:
    sys.exit(f"classes.json has {len(classes)} classes, expected {num_classes}")
x = torch.randint(0, 256, (2, 3, 61, 47), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    p = m(x)
    p2, score = m.tag(x)
if not torch.equal(p, p2) or tuple(score.shape) != (2,):
    sys.exit(f"tag() disagrees with forward() or gives scores of shape {tuple(score.shape)}")
if tuple(p.shape) != (2, num_classes):
    sys.exit(f"output shape {tuple(p.shape)}, expected (2, {num_classes})")
if not torch.allclose(p.sum(-1), torch.ones(2, dtype=p.dtype), atol=1e-4):
    sys.exit(f"probabilities sum to {p.sum(-1).tolist()}")
bad = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[3:]))
if bad:
    sys.exit(f"loading the predictor imported {bad}")
print("ok")
"""


def check_in_fresh_process(
    path: str | os.PathLike, num_classes: int, *, forbidden: tuple[str, ...] = FORBIDDEN_MODULES, timeout: float = 300.0
) -> None:
    """Load and run the predictor in a new interpreter that imports only torch; raise RuntimeError if that
    fails or if any `forbidden` module ends up imported."""
    cmd = [sys.executable, "-I", "-c", FRESH_PROCESS_SCRIPT, str(path), str(num_classes), *forbidden]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"the predictor does not load in a fresh process: {' | '.join(tail)}")


def export_predictor(
    tagger: Tagger,
    *,
    classes: list[dict[str, Any]],
    preprocess: dict[str, Any],
    tagging: dict[str, Any],
    check_images: list[torch.Tensor],
    out_path: str | os.PathLike,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Build, verify and atomically write the predictor file; returns what was checked.

    Verified before anything is written: (a) the serialised file, loaded back, matches the eager
    tagger (probabilities and scores) within `tolerance` on `check_images` (uint8 [3, H, W]), and (b) it loads and runs in a
    fresh interpreter that imports only torch. Either failure raises RuntimeError.
    """
    if not check_images:
        raise ValueError("export needs at least one image to check the predictor against the model")
    data = predictor_bytes(build_predictor(tagger, preprocess), classes=classes, tagging=tagging, preprocess=preprocess)
    loaded, _ = load_predictor_bytes(data)
    diff = max_difference(loaded, tagger, preprocess, check_images)
    if not diff <= tolerance:  # also catches nan
        raise RuntimeError(f"predictor differs from the eager model by {diff:.3g} (> {tolerance:g})")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as tmp:
        candidate = Path(tmp) / out_path.name
        candidate.write_bytes(data)
        check_in_fresh_process(candidate, len(classes))
    atomic_write_bytes(out_path, data)
    return {"max_abs_diff": diff, "check_images": len(check_images), "bytes": len(data), "num_classes": len(classes)}
