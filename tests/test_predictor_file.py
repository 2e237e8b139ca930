"""The predictor file formats (.pt, .pt2, .onnx): written and read back, loaded with their runtime alone, clear
errors, display names."""
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
    display_names, load_predictor, onnx_bytes, plain_json, predictor_bytes, predictor_format, program_bytes,
    torchscript_deprecations, torchscript_note,
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


class ColourTagging(nn.Module):
    """ColourPredictor.tag as the one entry point, as the .pt2 and .onnx files have it."""

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return ColourPredictor().tag(x)


def colour_program() -> torch.export.ExportedProgram:
    dims = ({0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=1),
             3: torch.export.Dim("width", min=1)},)
    return torch.export.export(ColourTagging(), (torch.zeros(2, 3, 5, 7, dtype=torch.uint8),), dynamic_shapes=dims)


def colour_onnx() -> object:
    return torch.onnx.export(colour_program(), dynamo=True, opset_version=18, input_names=["images"],
                             output_names=["probabilities", "scores"], verbose=False).model_proto


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The colour predictor in each format: {format: path}."""
    folder = tmp_path_factory.mktemp("colour")
    records = {"classes": CLASSES, "tagging": TAGGING, "preprocess": PREPROCESS}
    files = {"torchscript": (folder / "predictor.pt", colour_bytes()),
             "torch.export": (folder / "predictor.pt2", program_bytes(colour_program(), **records)),
             "onnx": (folder / "predictor.onnx", onnx_bytes(colour_onnx(), **records))}
    for path, data in files.values():
        path.write_bytes(data)
    return {kind: path for kind, (path, _) in files.items()}


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


@pytest.mark.parametrize("kind", ["torchscript", "torch.export", "onnx"])
def test_every_format_round_trips_from_a_path_and_from_its_bytes(kind: str, colour_files: dict[str, Path]) -> None:
    path = colour_files[kind]
    assert predictor_format(path) == kind and predictor_format(path.with_suffix(".PT2")) == "torch.export"
    for source, fmt in ((path, None), (str(path), None), (path.read_bytes(), kind)):
        p = load_predictor(source, format=fmt)
        assert p.format == kind
        assert (p.classes, p.tagging, p.preprocess, p.threshold) == (CLASSES, TAGGING, PREPROCESS, 0.6)
        probs, scores = p(images())
        assert probs.dtype == scores.dtype == np.float64 and probs.shape == (3, 2) and scores.shape == (3,)
        assert probs[:, 0].argmax() == 0 and probs[:, 1].argmax() == 1
        np.testing.assert_allclose(scores, probs.max(axis=1) * 0.5, rtol=1e-6)
        np.testing.assert_allclose(p(images()[:1])[0], probs[:1], atol=1e-6)  # any batch size
        with pytest.raises(ValueError, match="uint8"):
            p(images().float())
        with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
            p(images()[0])


def test_the_records_are_where_each_runtime_reads_them(colour_files: dict[str, Path]) -> None:
    import onnxruntime as ort

    extra = dict.fromkeys(EXTRA_FILES, "")
    torch.export.load(str(colour_files["torch.export"]), extra_files=extra)
    meta = ort.InferenceSession(str(colour_files["onnx"]), providers=["CPUExecutionProvider"]).get_modelmeta()
    for found in (extra, meta.custom_metadata_map):
        assert json.loads(found["classes.json"]) == CLASSES and "Château" in found["classes.json"]  # written unescaped
        assert json.loads(found["tagging.json"]) == TAGGING and json.loads(found["preprocess.json"]) == PREPROCESS
    with pytest.raises(ValueError, match="already has metadata"):
        onnx_bytes(ort_model_with(["classes.json"]), classes=CLASSES, tagging=TAGGING, preprocess=PREPROCESS)


def ort_model_with(metadata: list[str], input_name: str = "images") -> object:
    """A foreign ONNX model: uint8 in, identity out, with these metadata keys."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", [input_name], ["probabilities"]),
                               helper.make_node("Identity", [input_name], ["scores"])], "foreign",
                              [helper.make_tensor_value_info(input_name, TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("probabilities", TensorProto.UINT8, None),
                               helper.make_tensor_value_info("scores", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.helper.set_model_props(model, {key: "[]" for key in metadata})
    return model


def test_an_onnx_predictor_loads_and_runs_without_torch(colour_files: dict[str, Path]) -> None:
    """With torch unimportable, load_predictor and the ONNX session still answer a numpy batch."""
    code = (
        "import json, sys\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import numpy as np\n"
        "from landmarks.predictor_file import load_predictor\n"
        "p = load_predictor(sys.argv[1], threads=1)\n"
        "probs, scores = p(np.zeros((2, 3, 4, 6), dtype=np.uint8))\n"
        "print(json.dumps({'format': p.format, 'shape': list(probs.shape), 'classes': len(p.classes)}))\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(colour_files["onnx"])], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"format": "onnx", "shape": [2, 2], "classes": 2}


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
                           "(build it with `dvc repro export`, or pass --model)")
    with pytest.raises(PredictorFileError, match="not found"):
        load_predictor(tmp_path)  # a folder
    # a training checkpoint passed by mistake, junk, and a TorchScript file that lacks the records
    ckpt = tmp_path / "transfer.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "classes": CLASSES}, ckpt)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    for path in (ckpt, junk):
        with pytest.raises(PredictorFileError) as e:
            load_predictor(path)
        assert one_line(e).startswith(f"{path} is not a landmarks predictor file (")
        assert one_line(e).endswith("pass an exported models/predictor.pt, .pt2 or .onnx, not a training checkpoint")
    with pytest.raises(PredictorFileError, match="^these bytes is not a landmarks predictor file"):
        load_predictor(b"not a model")
    bare = io.BytesIO()
    torch.jit.save(torch.jit.script(ColourPredictor()), bare)
    for classes in (None, [], {"11": "Eiffel Tower"}):
        buf = io.BytesIO()
        extra = {} if classes is None else {"classes.json": json.dumps(classes), "tagging.json": "{}",
                                            "preprocess.json": json.dumps(PREPROCESS)}
        torch.jit.save(torch.jit.script(ColourPredictor()), buf, _extra_files=extra)
        with pytest.raises(PredictorFileError) as e:
            load_predictor(buf.getvalue())
        assert one_line(e) == "these bytes is not a landmarks predictor file (no classes inside)"


def test_corrupt_or_foreign_pt2_and_onnx_files_are_one_clear_error(
        tmp_path: Path, colour_files: dict[str, Path], capfd: pytest.CaptureFixture) -> None:
    cases = {
        "junk.pt2": b"\x00" * 100,
        "torchscript.pt2": colour_files["torchscript"].read_bytes(),  # a zip, but not a program
        "truncated.pt2": colour_files["torch.export"].read_bytes()[:5000],
        "junk.onnx": b"not a model",
        "truncated.onnx": colour_files["onnx"].read_bytes()[:3000],
        "program.onnx": colour_files["torch.export"].read_bytes(),
        "foreign.onnx": ort_model_with([], input_name="x").SerializeToString(),  # other inputs
        "bare.onnx": ort_model_with([]).SerializeToString(),  # our inputs, no records
    }
    buf = io.BytesIO()
    torch.export.save(colour_program(), buf)  # a program without the records
    cases["bare.pt2"] = buf.getvalue()
    capfd.readouterr()
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(PredictorFileError) as e:
            load_predictor(path)
        assert one_line(e).startswith(f"{path} is not a landmarks predictor file ("), name
        why = {"bare.pt2": "(no classes inside)", "bare.onnx": "(no classes inside)",
               "foreign.onnx": "(inputs ['x'] and outputs ['probabilities', 'scores'], expected ['images']"}
        assert why.get(name, "") in one_line(e), (name, one_line(e))
    assert capfd.readouterr().err == ""  # no runtime's traceback or log on the way


def test_display_names_are_unique_where_names_repeat() -> None:
    classes = [{"landmark_id": 1, "name": "Tower"}, {"landmark_id": 2, "name": "Tower"}, {"landmark_id": 3, "name": ""},
               {"landmark_id": 4}, {"landmark_id": 5, "name": "Bridge"}, {"landmark_id": 6, "name": "3"}]
    assert [display_name(c) for c in classes] == ["Tower", "Tower", "3", "4", "Bridge", "3"]
    assert display_names(classes) == ["Tower (1)", "Tower (2)", "3 (3)", "4", "Bridge", "3 (6)"]
    assert display_names(CLASSES) == ["Eiffel Tower", "Château de Versailles"]
    assert display_names([]) == []


def test_torchscript_deprecations_are_collected_once_and_other_warnings_pass() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torchscript_deprecations() as deprecated:
            for _ in range(2):
                warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning)
            warnings.warn("something else", FutureWarning)
            warnings.warn("`torch.jit.load` is deprecated", UserWarning)  # not the deprecation: another category
        warnings.warn("`torch.jit.load` is deprecated", FutureWarning)
    assert deprecated == ["`torch.jit.script` is deprecated. Please switch to `torch.compile`"]
    assert [str(w.message) for w in caught] == ["something else", "`torch.jit.load` is deprecated",
                                                "`torch.jit.load` is deprecated"]


def test_loading_torchscript_warns_once_what_to_use_instead_and_the_other_formats_do_not(
        colour_files: dict[str, Path]) -> None:
    """torch 2.14's torch.jit.load deprecation is not hidden: it becomes one FutureWarning that names the
    .pt2 and .onnx files, pointing at the caller."""
    for kind, path in colour_files.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_predictor(path)
        futures = [w for w in caught if issubclass(w.category, FutureWarning)]
        if kind == "torchscript" and torch_deprecates_jit():
            assert len(futures) == 1 and futures[0].filename == __file__, [str(w.message) for w in futures]
            assert "`torch.jit.load` is deprecated" in str(futures[0].message)
            assert "use the .pt2 (torch.export) or .onnx predictor instead" in str(futures[0].message)
        else:
            assert futures == [], (kind, [str(w.message) for w in futures])


def test_the_deprecation_note_quotes_each_torch_warning_once_even_around_a_load() -> None:
    inner = torchscript_note(["`torch.jit.load` is deprecated. Please switch to `torch.export`."])
    note = torchscript_note(["`torch.jit.script` is deprecated. Please switch", inner, "`torch.jit.load` is deprecated"])
    assert note == ("TorchScript is deprecated by torch (`torch.jit.script` is deprecated; `torch.jit.load` is "
                    "deprecated): use the .pt2 (torch.export) or .onnx predictor instead; the .pt stays for torch "
                    "versions that cannot load the .pt2")


def torch_deprecates_jit() -> bool:
    """Whether this torch warns on torch.jit.load (2.14 does; older ones load TorchScript silently)."""
    buf = io.BytesIO(colour_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.load(buf)
    return any("deprecated" in str(w.message) for w in caught)


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
