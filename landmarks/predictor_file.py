"""The predictor files (models/predictor.pt, .pt2, .onnx): their format, how to write and load them.

One contract in three formats: a uint8 RGB batch [B, 3, H, W] of any B, H, W in (resizing,
cropping and normalisation happen inside), class probabilities [B, C] and the open-set score [B]
out; a photo is tagged when its score reaches the threshold in tagging.json. Three JSON records
travel inside every file:

- classes.json: the class dicts in output order (landmark_id, name, category info, counts)
- tagging.json: the score, its threshold chosen on the validation split, and what it achieves
- preprocess.json: image_size, resize_size, mean, std

The formats, chosen by the file's extension:

- `.pt`, TorchScript: `forward` -> probabilities, `tag` -> (probabilities, score); records as
  extra files (`torch.jit.load(path, _extra_files={"classes.json": "", ...})`). Files written
  before the open-set score have no `tag`: their score is the top probability.
- `.pt2`, a torch.export program: `torch.export.load(path, extra_files=...).module()(x)` ->
  (probabilities, score); records as extra files.
- `.onnx`, ONNX (opset 18): input `images`, outputs `probabilities` and `scores`; records in the
  model's metadata_props under the same names.

This module is the one owner of those formats. It imports only the standard library at the top:
torch when a torch file is written or loaded, onnxruntime and numpy for an ONNX file (which
therefore runs without torch), so whatever serves the predictor needs none of the training code.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import warnings
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import numpy as np
    import torch

CLASSES_FILE, TAGGING_FILE, PREPROCESS_FILE = "classes.json", "tagging.json", "preprocess.json"
EXTRA_FILES = (CLASSES_FILE, TAGGING_FILE, PREPROCESS_FILE)
TORCHSCRIPT, PROGRAM, ONNX = "torchscript", "torch.export", "onnx"
# A file's format follows from its extension; anything else is TorchScript, as models/predictor.pt always was.
SUFFIXES = {".pt2": PROGRAM, ".onnx": ONNX}
ONNX_OPSET = 18  # the first with an antialiased Resize
ONNX_INPUT, ONNX_OUTPUTS = "images", ("probabilities", "scores")


class PredictorFileError(ValueError):
    """There is no usable predictor at that path or in those bytes: missing, a training checkpoint, no classes."""


def predictor_format(path: str | os.PathLike) -> str:
    """TORCHSCRIPT, PROGRAM or ONNX, from the file name."""
    return SUFFIXES.get(Path(path).suffix.lower(), TORCHSCRIPT)


# torch 2.14 deprecates TorchScript: torch.jit.trace, script, save and load each warn with this.
JIT_DEPRECATION = re.compile(r"torch\.jit.* is deprecated", re.DOTALL)
TORCHSCRIPT_ALTERNATIVES = ("use the .pt2 (torch.export) or .onnx predictor instead; "
                            "the .pt stays for torch versions that cannot load the .pt2")


@contextmanager
def torchscript_deprecations() -> Iterator[list[str]]:
    """Collect torch's "torch.jit.* is deprecated" FutureWarnings raised inside the block into the yielded
    list (each message once, filled when the block ends) instead of letting every call print its own;
    other warnings pass on. The caller reports them once, with TORCHSCRIPT_ALTERNATIVES: the deprecation
    is handled where it arises, not filtered away."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for w in caught:
        message = str(w.message)
        if issubclass(w.category, FutureWarning) and JIT_DEPRECATION.search(message):
            if message not in found:
                found.append(message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


NOTE_PREFIX = "TorchScript is deprecated by torch ("


def torchscript_note(deprecations: list[str]) -> str:
    """One line for torch's TorchScript deprecation warnings: what torch said, and what to use instead.
    A note among them (load_predictor's, collected by an outer block) adds what it quoted, not itself."""
    said: list[str] = []
    for m in deprecations:
        if m.startswith(NOTE_PREFIX):
            said += m[len(NOTE_PREFIX):m.index("): ")].split("; ")
        else:
            said.append(m.split(". ")[0].strip())
    return f"{NOTE_PREFIX}{'; '.join(dict.fromkeys(said))}): {TORCHSCRIPT_ALTERNATIVES}"


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


def records(*, classes: list[dict[str, Any]], tagging: dict[str, Any], preprocess: dict[str, Any]) -> dict[str, str]:
    """The three JSON records every predictor file carries, checked; keys are the EXTRA_FILES names."""
    if len(classes) == 0:
        raise ValueError("a predictor needs at least one class")
    missing = [i for i, c in enumerate(classes) if "landmark_id" not in c or "name" not in c]
    if missing:
        raise ValueError(f"classes {missing[:5]} lack landmark_id or name")
    return {
        CLASSES_FILE: json.dumps(plain_json(classes), ensure_ascii=False),
        TAGGING_FILE: json.dumps(plain_json(tagging)),
        PREPROCESS_FILE: json.dumps(plain_json(preprocess)),
    }


def predictor_bytes(predictor: torch.jit.ScriptModule, *, classes: list[dict[str, Any]], tagging: dict[str, Any],
                    preprocess: dict[str, Any]) -> bytes:
    """The .pt file: the scripted module with the records as extra files."""
    import torch

    extra = records(classes=classes, tagging=tagging, preprocess=preprocess)
    buf = io.BytesIO()
    torch.jit.save(predictor, buf, _extra_files=extra)  # torch 2.14 warns that this is deprecated: callers decide
    return buf.getvalue()


def program_bytes(program: torch.export.ExportedProgram, *, classes: list[dict[str, Any]], tagging: dict[str, Any],
                  preprocess: dict[str, Any]) -> bytes:
    """The .pt2 file: a torch.export program mapping uint8 images to (probabilities, scores), records as extra files."""
    import torch

    extra = records(classes=classes, tagging=tagging, preprocess=preprocess)
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files=extra)
    return buf.getvalue()


def onnx_bytes(model: Any, *, classes: list[dict[str, Any]], tagging: dict[str, Any], preprocess: dict[str, Any]) -> bytes:
    """The .onnx file: an onnx.ModelProto mapping `images` to `probabilities` and `scores`, records in
    metadata_props (added to `model`)."""
    extra = records(classes=classes, tagging=tagging, preprocess=preprocess)
    clash = sorted({p.key for p in model.metadata_props} & set(extra))
    if clash:
        raise ValueError(f"the ONNX model already has metadata {clash}")
    for key, value in extra.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


# ----------------------------------------------------------------------------- loading

@dataclass
class LoadedPredictor:
    """A loaded predictor file: the runnable (a TorchScript module, a torch.export program's module or an
    onnxruntime session) and its three records. Called on a uint8 batch, every format answers alike."""

    module: Any
    classes: list[dict[str, Any]]
    tagging: dict[str, Any]
    preprocess: dict[str, Any]
    format: str = TORCHSCRIPT

    @property
    def threshold(self) -> float:
        """Tag only predictions whose open-set score reaches this; below, the answer is "no landmark"."""
        value = self.tagging.get("threshold")
        return 0.0 if value is None else float(value)

    def __call__(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, 3, H, W] (a torch tensor, or for ONNX also a numpy array) -> (probabilities [B, C],
        open-set scores [B]) as float64 numpy arrays. ValueError for another dtype or shape; RuntimeError
        if the runtime fails on the batch."""
        shape, dtype = tuple(batch.shape), str(batch.dtype)
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"expected a uint8 RGB batch of shape [B, 3, H, W], got {list(shape)}")
        if dtype not in ("torch.uint8", "uint8"):
            raise ValueError(f"expected dtype uint8 (0..255 RGB pixels), got {dtype}")
        if self.format == ONNX:
            return self._run_onnx(batch)
        import torch

        with torch.no_grad():
            if self.format == PROGRAM:
                probs, scores = self.module(batch)
            elif hasattr(self.module, "tag"):
                probs, scores = self.module.tag(batch)
            else:  # a TorchScript file from before the open-set score: its threshold was chosen for this
                probs = self.module(batch)
                scores = probs.max(dim=1).values
        return probs.double().numpy(), scores.double().numpy()

    def _run_onnx(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        try:
            probs, scores = self.module.run(list(ONNX_OUTPUTS), {ONNX_INPUT: np.ascontiguousarray(batch)})
        except Exception as e:  # onnxruntime's errors derive from Exception only; batching retries RuntimeErrors
            raise RuntimeError(f"onnxruntime: {e}") from e
        return probs.astype(np.float64), scores.astype(np.float64)


def _load_torchscript(stream: Any, threads: int | None) -> tuple[Any, dict[str, str]]:
    import torch

    extra = dict.fromkeys(EXTRA_FILES, "")
    with torchscript_deprecations() as deprecations:
        module = torch.jit.load(stream, map_location="cpu", _extra_files=extra)
    if deprecations:  # one warning that says what to do, pointing at whoever called load_predictor
        warnings.warn(torchscript_note(deprecations), FutureWarning, stacklevel=3)
    return module.eval(), extra


def _load_program(stream: Any, threads: int | None) -> tuple[Any, dict[str, str]]:
    import torch

    extra = dict.fromkeys(EXTRA_FILES, "")
    # On a file it cannot read, torch.export.load logs a traceback before raising: the raise is enough.
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(stream, extra_files=extra)
    except zipfile.BadZipFile as e:
        raise ValueError(str(e)) from None
    finally:
        logger.setLevel(level)
    return program.module(), extra


def _load_onnx(stream: Any, threads: int | None) -> tuple[Any, dict[str, str]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = stream.getvalue() if isinstance(stream, io.BytesIO) else stream
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
        raise ValueError(str(e)) from None
    inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if inputs != [ONNX_INPUT] or outputs != list(ONNX_OUTPUTS):
        raise ValueError(f"inputs {inputs} and outputs {outputs}, expected {[ONNX_INPUT]} and {list(ONNX_OUTPUTS)}")
    return session, dict(session.get_modelmeta().custom_metadata_map)


_LOADERS = {TORCHSCRIPT: _load_torchscript, PROGRAM: _load_program, ONNX: _load_onnx}


def load_predictor(source: str | os.PathLike | bytes, *, format: str | None = None,
                   threads: int | None = None) -> LoadedPredictor:
    """Load a predictor file from a path or from its bytes; PredictorFileError if that is impossible.

    The format is `format`, or follows from the path's extension (bytes: TorchScript unless told);
    `threads` caps onnxruntime's CPU threads (torch's are set with torch.set_num_threads). A missing
    tagging.json (very old files) reads as {}: threshold 0."""
    if isinstance(source, bytes):
        what, stream, kind = "these bytes", io.BytesIO(source), format or TORCHSCRIPT
    else:
        path = Path(source)
        if not path.is_file():
            raise PredictorFileError(f"model file {str(path)!r} not found "
                                     "(build it with `dvc repro export`, or pass --model)")
        what, stream, kind = str(path), str(path), format or predictor_format(path)
    if kind not in _LOADERS:
        raise ValueError(f"format={kind!r} is not valid; choose one of: {', '.join(_LOADERS)}")
    try:
        module, extra = _LOADERS[kind](stream, threads)
        classes = json.loads(extra.get(CLASSES_FILE) or "null")
        tagging = json.loads(extra.get(TAGGING_FILE) or "{}")
        preprocess = json.loads(extra.get(PREPROCESS_FILE) or "null")
    except (RuntimeError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise PredictorFileError(f"{what} is not a landmarks predictor file ({first}); pass an exported "
                                 "models/predictor.pt, .pt2 or .onnx, not a training checkpoint") from None
    if not isinstance(classes, list) or not classes:
        raise PredictorFileError(f"{what} is not a landmarks predictor file (no classes inside)")
    if not isinstance(preprocess, dict):
        raise PredictorFileError(f"{what} is not a landmarks predictor file (no preprocess.json inside)")
    return LoadedPredictor(module, classes, tagging, preprocess, kind)
