"""Building the deployable predictors: one tagger, three files that map uint8 photos to class
probabilities and the open-set score.

`Predictor` puts `preprocess_uint8` (the very function evaluation uses) in front of the tagger. It
is scripted for TorchScript (.pt), exported by torch.export (.pt2) and by torch.onnx's dynamo
exporter (.onnx, where the antialiased resize becomes an ONNX Resize with antialias=1), each taking
any batch size, height and width; the file formats are landmarks.predictor_file's.
`export_predictors` checks every file against the eager tagger and in a fresh interpreter that
imports only its runtime, before it writes any of them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, List, Tuple

import torch
from torch import nn

from landmarks.files import atomic_write_bytes
from landmarks.openset import Tagger, open_set_scores
from landmarks.predictor_file import (
    CLASSES_FILE, EXTRA_FILES, ONNX, ONNX_INPUT, ONNX_OPSET, ONNX_OUTPUTS, PROGRAM, TORCHSCRIPT, load_predictor,
    onnx_bytes, predictor_bytes, predictor_format, program_bytes, torchscript_deprecations,
)
from landmarks.transforms import preprocess_uint8

# Largest allowed |predictor - eager model| over the probabilities and scores of the check images.
# ONNX runtimes fuse and reorder float operations (and resize in their own kernel): 1e-4 leaves
# room for that while still catching a wrong resize, crop or normalisation by orders of magnitude.
TOLERANCES = {TORCHSCRIPT: 1e-5, PROGRAM: 1e-5, ONNX: 1e-4}
# Modules the deployed file must not need: only its runtime may be imported to use it.
FORBIDDEN_MODULES = ("landmarks", "torchvision", "timm")
CHECK_BATCH = 8  # same-size check images also run as one batch of at most this many


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


class Tagging(nn.Module):
    """A Predictor whose forward is `tag`: torch.export and ONNX keep one entry point, and it is this one."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.predictor.tag(x)


def _predictor(tagger: Tagger, network: nn.Module, preprocess: dict[str, Any]) -> Predictor:
    return Predictor(network, tagger, preprocess["image_size"], preprocess["resize_size"], preprocess["mean"],
                     preprocess["std"]).eval()


def build_predictor(tagger: Tagger, preprocess: dict[str, Any]) -> torch.jit.ScriptModule:
    """Trace the tagger's network (eval mode, CPU) at the checkpoint's image size and script the uint8
    wrapper around it. Tracing at one size is exact because preprocess_uint8 always yields image_size x image_size.
    torch 2.14 warns that trace and script are deprecated; export_predictors reports that."""
    tagger = tagger.eval().cpu()
    size = int(preprocess["image_size"])
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        network = torch.jit.trace(tagger.net, example)
        return torch.jit.script(_predictor(tagger, network, preprocess))


def _export_inputs(tagger: Tagger, preprocess: dict[str, Any]) -> tuple[Tagging, tuple[torch.Tensor], tuple[dict]]:
    """(module, example args, dynamic shapes) to export: batch size, height and width symbolic."""
    size = int(preprocess["image_size"])
    # Distinct example sizes (none 0, 1 or 3): torch.export takes equal sizes for the same dimension.
    example = torch.randint(0, 256, (2, 3, size + 7, size + 4), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    dims = ({0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=1),
             3: torch.export.Dim("width", min=1)},)
    tagger = tagger.eval().cpu()
    return Tagging(_predictor(tagger, tagger.net, preprocess)).eval(), (example,), dims


def build_program(tagger: Tagger, preprocess: dict[str, Any]) -> torch.export.ExportedProgram:
    """torch.export the eager tagger behind preprocess_uint8 (forward: tag)."""
    module, args, dims = _export_inputs(tagger, preprocess)
    with torch.no_grad():
        program = torch.export.export(module, args, dynamic_shapes=dims)
    # Each node keeps the Python stack it was traced from, with the absolute paths of this checkout and
    # its venv: the same model exported in another folder would give another file.
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    return program


def build_onnx(tagger: Tagger, preprocess: dict[str, Any]) -> Any:
    """The onnx.ModelProto of the eager tagger behind preprocess_uint8, by torch.onnx's dynamo exporter
    (from the module, not a saved program: so the dimensions keep their names, batch, height and width)."""
    module, args, dims = _export_inputs(tagger, preprocess)
    with torch.no_grad():
        program = torch.onnx.export(module, args, dynamic_shapes=dims, dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=[ONNX_INPUT], output_names=list(ONNX_OUTPUTS), verbose=False)
    model = program.model_proto
    # The exporter notes on every node where it came from, with reprs of Python objects and their memory
    # addresses: the file would differ on every export, and dvc would see a new model each time.
    for graph_nodes in (model.graph.node, *(f.node for f in model.functions)):
        for node in graph_nodes:
            del node.metadata_props[:]
    return model


# uint8 [B, 3, H, W] -> (probabilities [B, C], scores [B]), tensors or arrays: a LoadedPredictor, a module's tag.
Predict = Callable[[torch.Tensor], Tuple[Any, Any]]


@torch.no_grad()
def reference_outputs(tagger: Tagger, preprocess: dict[str, Any], images: list[torch.Tensor]) -> list[torch.Tensor]:
    """[N, C + 1]: what the eager tagger gives each uint8 [3, H, W] image on its own (probabilities, then score)."""
    tagger = tagger.eval().cpu()
    return [torch.cat([p[0], s]) for p, s in (tagger(preprocess_uint8(img.unsqueeze(0), **preprocess)) for img in images)]


def max_difference(predict: Predict, tagger: Tagger, preprocess: dict[str, Any], images: list[torch.Tensor], *,
                   reference: list[torch.Tensor] | None = None) -> float:
    """Largest difference between `predict` and the eager tagger on preprocess_uint8, over the probabilities
    and open-set scores of uint8 [3, H, W] images: one at a time, and the commonest size as one batch
    (when at least two images share it). `reference`: reference_outputs, if already computed."""
    expected = reference if reference is not None else reference_outputs(tagger, preprocess, images)

    def rows(x: torch.Tensor) -> torch.Tensor:
        probs, scores = predict(x)
        return torch.cat([torch.as_tensor(probs).float(), torch.as_tensor(scores).float().reshape(-1, 1)], dim=1)

    worst = 0.0
    with torch.no_grad():
        for img, e in zip(images, expected):
            worst = max(worst, float((rows(img.unsqueeze(0))[0] - e).abs().max()))
        size, count = Counter(tuple(img.shape) for img in images).most_common(1)[0]
        if count >= 2:
            same = [i for i, img in enumerate(images) if tuple(img.shape) == size][:CHECK_BATCH]
            got = rows(torch.stack([images[i] for i in same]))
            worst = max(worst, float((got - torch.stack([expected[i] for i in same])).abs().max()))
    return worst


# ----------------------------------------------------------------------------- fresh-process checks

# Each runs in a bare interpreter: it defines `records` (the JSON records) and `run(b, h, w)`, which
# predicts a random uint8 batch and returns (probabilities, scores) as lists, with the file's runtime alone.
_FRESH_LOADERS = {
    TORCHSCRIPT: """
import torch
extra = dict.fromkeys(EXTRA_FILES, "")
m = torch.jit.load(path, map_location="cpu", _extra_files=extra)
records = extra
def run(b, h, w):
    x = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = m(x)
        p2, score = m.tag(x)
    if not torch.equal(p, p2):
        sys.exit("tag() disagrees with forward()")
    return p.tolist(), score.tolist()
""",
    PROGRAM: """
import torch
records = dict.fromkeys(EXTRA_FILES, "")
m = torch.export.load(path, extra_files=records).module()
def run(b, h, w):
    x = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p, score = m(x)
    return p.tolist(), score.tolist()
""",
    ONNX: """
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
records = session.get_modelmeta().custom_metadata_map
def run(b, h, w):
    x = np.random.default_rng(0).integers(0, 256, (b, 3, h, w), dtype=np.uint8)
    p, score = session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: x})
    return p.tolist(), score.tolist()
""",
}
_FRESH_CHECKS = """
classes = json.loads(records[CLASSES_FILE])
if len(classes) != num_classes:
    sys.exit(f"{CLASSES_FILE} has {len(classes)} classes, expected {num_classes}")
for b, h, w in ((2, 61, 47), (1, 30, 90)):
    probs, scores = run(b, h, w)
    if len(probs) != b or any(len(p) != num_classes for p in probs) or len(scores) != b:
        sys.exit(f"a batch of {b} gave {len(probs)} x {len(probs[0])} probabilities and {len(scores)} scores")
    if any(abs(sum(p) - 1) > 1e-4 for p in probs):
        sys.exit(f"probabilities sum to {[sum(p) for p in probs]}")
bad = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[3:]))
if bad:
    sys.exit(f"loading the predictor imported {bad}")
print("ok")
"""


def fresh_process_script(kind: str) -> str:
    """The script check_in_fresh_process runs for a file of format `kind` (argv: path, number of classes, forbidden modules)."""
    constants = (f"EXTRA_FILES, CLASSES_FILE = {EXTRA_FILES!r}, {CLASSES_FILE!r}\n"
                 f"ONNX_INPUT, ONNX_OUTPUTS = {ONNX_INPUT!r}, {ONNX_OUTPUTS!r}\n"
                 "import json, sys\npath, num_classes = sys.argv[1], int(sys.argv[2])\n")
    return constants + _FRESH_LOADERS[kind] + _FRESH_CHECKS


def check_in_fresh_process(
    path: str | os.PathLike, num_classes: int, *, forbidden: tuple[str, ...] | None = None, timeout: float = 300.0
) -> None:
    """Load and run the predictor file in a new interpreter that imports only its runtime (torch, or for
    ONNX onnxruntime and numpy); raise RuntimeError if that fails or if any `forbidden` module ends up
    imported (default: FORBIDDEN_MODULES, and torch for an ONNX file)."""
    kind = predictor_format(path)
    if forbidden is None:
        forbidden = FORBIDDEN_MODULES + (("torch",) if kind == ONNX else ())
    cmd = [sys.executable, "-I", "-c", fresh_process_script(kind), str(path), str(num_classes), *forbidden]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"the {kind} predictor does not load in a fresh process: {' | '.join(tail)}")


# ----------------------------------------------------------------------------- export

def export_predictors(
    tagger: Tagger,
    *,
    classes: list[dict[str, Any]],
    preprocess: dict[str, Any],
    tagging: dict[str, Any],
    check_images: list[torch.Tensor],
    out_paths: list[str | os.PathLike],
    tolerances: dict[str, float] = TOLERANCES,
) -> dict[str, dict[str, Any]]:
    """Build, verify and atomically write one predictor file per path, its format following its extension
    (.pt TorchScript, .pt2 torch.export, .onnx ONNX); returns what was checked, per path.

    Verified before any file is written: (a) each file, loaded back, matches the eager tagger
    (probabilities and scores) within its tolerance on `check_images` (uint8 [3, H, W]), one at a time
    and batched, and (b) it loads and runs in a fresh interpreter that imports only its runtime.
    Either failure raises RuntimeError, and nothing is written. A report's "deprecated" lists what torch
    warned about the format while building, writing and loading it (TorchScript, from torch 2.14).
    """
    if not check_images:
        raise ValueError("export needs at least one image to check the predictor against the model")
    if not out_paths:
        raise ValueError("export needs at least one file to write")
    meta = {"classes": classes, "tagging": tagging, "preprocess": preprocess}
    reference = reference_outputs(tagger, preprocess, check_images)
    built: dict[Path, tuple[bytes, dict[str, Any]]] = {}
    for out_path in map(Path, out_paths):
        kind = predictor_format(out_path)
        # Collected for the report, so the stage says once what torch deprecates instead of a warning per call.
        with torchscript_deprecations() as deprecated:
            if kind == TORCHSCRIPT:
                data = predictor_bytes(build_predictor(tagger, preprocess), **meta)
            elif kind == PROGRAM:
                data = program_bytes(build_program(tagger, preprocess), **meta)
            else:
                data = onnx_bytes(build_onnx(tagger, preprocess), **meta)
            predictor = load_predictor(data, format=kind)
        diff = max_difference(predictor, tagger, preprocess, check_images, reference=reference)
        if not diff <= tolerances[kind]:  # also catches nan
            raise RuntimeError(f"the {kind} predictor differs from the eager model by {diff:.3g} (> {tolerances[kind]:g})")
        built[out_path] = data, {"format": kind, "max_abs_diff": diff, "check_images": len(check_images),
                                 "bytes": len(data), "num_classes": len(classes), "deprecated": deprecated}
    first = next(iter(built))
    first.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=first.parent, prefix=".export-") as tmp:
        candidates = [Path(tmp) / f"{i}-{path.name}" for i, path in enumerate(built)]
        for candidate, (data, _) in zip(candidates, built.values()):
            candidate.write_bytes(data)
        # Side by side: each check is mostly a fresh interpreter importing its runtime, one core each.
        with ThreadPoolExecutor(len(candidates)) as pool:
            list(pool.map(lambda candidate: check_in_fresh_process(candidate, len(classes)), candidates))
    for out_path, (data, _) in built.items():
        atomic_write_bytes(out_path, data)
    return {str(path): report for path, (_, report) in built.items()}
