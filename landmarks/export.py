"""Building the deployable predictor: one TorchScript file that maps uint8 photos to class probabilities.

`build_predictor` scripts the tagger with `preprocess_uint8` (the very function evaluation uses) in
front, so the file needs nothing but torch to load and run; its format (the `tag` method, the JSON
records inside) is landmarks.predictor_file's. `export_predictor` checks the file against the eager
tagger and in a fresh torch-only interpreter before writing it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, List, Tuple

import torch
from torch import nn

from landmarks.files import atomic_write_bytes
from landmarks.openset import Tagger, open_set_scores
from landmarks.predictor_file import CLASSES_FILE, EXTRA_FILES, load_predictor, predictor_bytes, quiet_jit
from landmarks.transforms import preprocess_uint8

# Largest allowed |predictor - eager model| over the probabilities of the check images.
TOLERANCE = 1e-5
# Modules the deployed file must not need: only torch may be imported to use it.
FORBIDDEN_MODULES = ("landmarks", "torchvision", "timm")


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
FRESH_PROCESS_SCRIPT = f"EXTRA_FILES, CLASSES_FILE = {EXTRA_FILES!r}, {CLASSES_FILE!r}\n" + """
import json, sys
import torch
path, num_classes = sys.argv[1], int(sys.argv[2])
extra = dict.fromkeys(EXTRA_FILES, "")
m = torch.jit.load(path, map_location="cpu", _extra_files=extra)
classes = json.loads(extra[CLASSES_FILE])
if len(classes) != num_classes:
    sys.exit(f"{CLASSES_FILE} has {len(classes)} classes, expected {num_classes}")
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
    diff = max_difference(load_predictor(data).module, tagger, preprocess, check_images)
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
