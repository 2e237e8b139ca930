"""The predictor file format: written and read back, loaded with torch alone, clear errors, display names."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from torch import nn

from landmarks.predictor_file import (
    CLASSES_FILE, EXTRA_FILES, PREPROCESS_FILE, TAGGING_FILE, LoadedPredictor, PredictorFileError, display_name,
    display_names, load_predictor, plain_json, predictor_bytes, quiet_jit,
)
from tests.conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.* is deprecated:FutureWarning")

CLASSES = [{"landmark_id": 11, "name": "Eiffel Tower", "category": "c11"},
           {"landmark_id": 22, "name": "Château de Versailles", "category": "c22"}]
TAGGING = {"threshold": 0.6, "score": "msp", "neighbours": 3}
PREPROCESS = {"image_size": 8, "resize_size": 9, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


class ColourPredictor(nn.Module):
    """A stand-in for the exported predictor, with the same contract: two classes, "red" and "green"."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tag(x)[0]

    @torch.jit.export
    def tag(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(x.float().mean(dim=(2, 3))[:, :2] / 10.0, dim=1)
        return probs, probs.max(dim=1).values * 0.5


class OldColourPredictor(nn.Module):
    """A file from before the open-set score: forward only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x.float().mean(dim=(2, 3))[:, :2] / 10.0, dim=1)


def colour_bytes(module: nn.Module = ColourPredictor(), **records: object) -> bytes:
    records = {"classes": CLASSES, "tagging": TAGGING, "preprocess": PREPROCESS, **records}
    return predictor_bytes(torch.jit.script(module), **records)


def images() -> torch.Tensor:
    x = torch.zeros(3, 3, 5, 7, dtype=torch.uint8)
    x[0, 0], x[1, 1], x[2] = 200, 200, 90  # red, green, grey
    return x


def test_round_trip_from_bytes_and_from_a_path(tmp_path: Path) -> None:
    data = colour_bytes()
    path = tmp_path / "predictor.pt"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        p = load_predictor(source)
        assert isinstance(p, LoadedPredictor) and not p.module.training
        assert (p.classes, p.tagging, p.preprocess, p.threshold) == (CLASSES, TAGGING, PREPROCESS, 0.6)
        probs, scores = p(images())
        assert probs.dtype == scores.dtype == np.float64 and probs.shape == (3, 2) and scores.shape == (3,)
        assert probs[:, 0].argmax() == 0 and probs[:, 1].argmax() == 1
        np.testing.assert_allclose(scores, probs.max(axis=1) * 0.5, rtol=1e-6)
    # the records are plain JSON inside the file, under the names torch.jit.load asks for
    extra = dict.fromkeys(EXTRA_FILES, "")
    torch.jit.load(io.BytesIO(data), _extra_files=extra)
    assert EXTRA_FILES == (CLASSES_FILE, TAGGING_FILE, PREPROCESS_FILE) == ("classes.json", "tagging.json", "preprocess.json")
    assert json.loads(extra["classes.json"]) == CLASSES and "Château".encode() in extra["classes.json"]  # written unescaped
    assert json.loads(extra["tagging.json"]) == TAGGING and json.loads(extra["preprocess.json"]) == PREPROCESS


def test_records_are_written_as_plain_json() -> None:
    tagging = {"threshold": np.float32(0.5), "precision": float("nan"), "counts": (np.int64(3), 4)}
    assert plain_json(tagging) == {"threshold": 0.5, "precision": None, "counts": [3, 4]}
    assert load_predictor(colour_bytes(tagging=tagging)).tagging == {"threshold": 0.5, "precision": None, "counts": [3, 4]}


def test_writing_refuses_classes_without_id_or_name() -> None:
    with pytest.raises(ValueError, match="at least one class"):
        colour_bytes(classes=[])
    with pytest.raises(ValueError, match=r"classes \[1\] lack landmark_id or name"):
        colour_bytes(classes=[CLASSES[0], {"landmark_id": 5}])


def test_old_files_without_tag_are_scored_by_their_top_probability() -> None:
    p = load_predictor(colour_bytes(OldColourPredictor()))
    assert not hasattr(p.module, "tag")
    probs, scores = p(images())
    np.testing.assert_array_equal(scores, probs.max(axis=1))


def test_a_file_without_tagging_json_has_threshold_0() -> None:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(ColourPredictor()), buf,
                   _extra_files={"classes.json": json.dumps(CLASSES), "preprocess.json": json.dumps(PREPROCESS)})
    p = load_predictor(buf.getvalue())
    assert p.tagging == {} and p.threshold == 0.0


def one_line(e: pytest.ExceptionInfo) -> str:
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    return str(e.value)


def test_what_is_not_a_predictor_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PredictorFileError) as e:
        load_predictor(tmp_path / "nope.pt")
    assert one_line(e) == (f"model file {str(tmp_path / 'nope.pt')!r} not found "
                           "(build it with `dvc repro export_torchscript`, or pass --model)")
    with pytest.raises(PredictorFileError, match="not found"):
        load_predictor(tmp_path)  # a folder
    # a training checkpoint passed by mistake, junk, and a TorchScript file that lacks the records
    ckpt = tmp_path / "transfer.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "classes": CLASSES}, ckpt)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    bare = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(ColourPredictor()), str(bare))
    for path in (ckpt, junk, bare):
        with pytest.raises(PredictorFileError) as e:
            load_predictor(path)
        assert one_line(e).startswith(f"{path} is not a landmarks predictor file (")
        assert one_line(e).endswith("pass the exported models/predictor.pt, not a training checkpoint")
    with pytest.raises(PredictorFileError, match="^these bytes is not a landmarks predictor file"):
        load_predictor(b"not a model")
    for classes in ([], {"11": "Eiffel Tower"}):
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(ColourPredictor()), buf, _extra_files={
            "classes.json": json.dumps(classes), "tagging.json": "{}", "preprocess.json": json.dumps(PREPROCESS)})
        with pytest.raises(PredictorFileError) as e:
            load_predictor(buf.getvalue())
        assert one_line(e) == "these bytes is not a landmarks predictor file (no classes inside)"


def test_display_names_are_unique_where_names_repeat() -> None:
    classes = [{"landmark_id": 1, "name": "Tower"}, {"landmark_id": 2, "name": "Tower"}, {"landmark_id": 3, "name": ""},
               {"landmark_id": 4}, {"landmark_id": 5, "name": "Bridge"}, {"landmark_id": 6, "name": "3"}]
    assert [display_name(c) for c in classes] == ["Tower", "Tower", "3", "4", "Bridge", "3"]
    assert display_names(classes) == ["Tower (1)", "Tower (2)", "3 (3)", "4", "Bridge", "3 (6)"]
    assert display_names(CLASSES) == ["Eiffel Tower", "Château de Versailles"]
    assert display_names([]) == []


def test_quiet_jit_silences_only_the_torchscript_deprecation() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_jit():
            warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning)
            warnings.warn("something else", FutureWarning)
        warnings.warn("`torch.jit.load` is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else", "`torch.jit.load` is deprecated"]


def test_loading_and_running_imports_nothing_but_torch(tmp_path: Path) -> None:
    """In a fresh isolated interpreter: the module, a load and a call pull in no other project module
    and none of the image, data-frame or model libraries of the training code."""
    path = tmp_path / "predictor.pt"
    path.write_bytes(colour_bytes())
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from landmarks.predictor_file import load_predictor\n"
        "import torch\n"
        "p = load_predictor(sys.argv[1])\n"
        "probs, scores = p(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))\n"
        "print(json.dumps({'file': sys.modules['landmarks.predictor_file'].__file__, 'shape': list(probs.shape),\n"
        "                  'modules': sorted(sys.modules)}))\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["file"] == str(REPO / "landmarks" / "predictor_file.py") and out["shape"] == [2, 2]
    tops = {name.split(".")[0] for name in out["modules"]}
    assert [m for m in out["modules"] if m.startswith("landmarks")] == ["landmarks", "landmarks.predictor_file"]
    assert not tops & {"torchvision", "timm", "pandas", "PIL", "matplotlib", "sklearn", "yaml"}
