"""The `landmarks` command on each predictor format (.pt2, .pt, .onnx): the same tags, the default file and its
fallback, the TorchScript deprecation note, one-line errors for files that are not predictors."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from landmarks.answers import NO_LANDMARK
from landmarks.cli import DEFAULT_MODELS, main
from landmarks.tagging import NEVER
from tests.test_cli import BAD, GOOD, model, photos, ranked_lines, tag_json, write_predictor  # noqa: F401 (fixtures)
from tests.test_export import CLASSES, one_thread  # noqa: F401 (one_thread: autouse fixture)
from tests.test_predictor_file import torch_deprecates_jit

pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.* is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, model: Path) -> dict[str, Path]:
    """The `model` predictor in each format: {extension: path}."""
    folder = model.parent
    return {".pt": model, ".pt2": write_predictor(folder / "predictor.pt2", -1.0),
            ".onnx": write_predictor(folder / "predictor.onnx", -1.0)}


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_every_predictor_format_tags_the_same_photos_the_same_way(
        suffix: str, photos: Path, models: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    code, expected, _ = tag_json(capsys, str(photos), "--model", str(models[".pt"]), "--batch-size", "3")
    code2, rows, err = tag_json(capsys, str(photos), "--model", str(models[suffix]), "--batch-size", "3", "--threads", "1")
    assert code == code2 == 1 and len(rows) == len(GOOD) + len(BAD)  # the bad files fail alike
    assert f"{len(GOOD)} tagged, 0 no landmark, {len(BAD)} failed" in err
    for want, got in zip(expected, rows):
        assert {k: v for k, v in got.items() if k not in ("confidence", "score", "error")} == \
            {k: v for k, v in want.items() if k not in ("confidence", "score", "error")}
        assert (got["error"] or "")[:10] == (want["error"] or "")[:10]
        if want["status"] == "ok":
            assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-4)
            assert got["score"] == pytest.approx(want["score"], abs=1e-4)
    assert main(["predict", str(photos / "good.jpg"), "--top-k", "3", "--model", str(models[".pt"])]) == 0
    shown = capsys.readouterr().out
    assert main(["predict", str(photos / "good.jpg"), "--top-k", "3", "--model", str(models[suffix])]) == 0
    assert [line.split()[1] for line in ranked_lines(capsys.readouterr().out)] == \
        [line.split()[1] for line in ranked_lines(shown)]


def test_every_format_makes_the_same_tag_decisions_at_a_threshold_that_splits_the_photos(
        photos: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The .pt2 and .onnx files carry the open-set score and the threshold too: `landmarks tag` tags the same
    photos, with the same landmarks, and calls the same ones "no landmark", whichever file it runs."""
    _, rows, _ = tag_json(capsys, str(photos), "--model", str(model))
    scores = sorted(r["score"] for r in rows if r["status"] == "ok")
    # the widest gap between two scores with photos on both sides: no format's 1e-4 can cross it
    gap, i = max((scores[j + 1] - scores[j], j) for j in range(len(scores) - 1))
    assert gap > 1e-3, scores
    threshold = (scores[i] + scores[i + 1]) / 2
    decisions = {}
    for suffix in (".pt", ".pt2", ".onnx"):
        path = write_predictor(tmp_path / f"predictor{suffix}", threshold)
        _, rows, _ = tag_json(capsys, str(photos), "--model", str(path))
        decisions[suffix] = [(r["path"], r["status"], r["landmark_id"], r["name"]) for r in rows]
    tagged = [d for d in decisions[".pt"] if d[1] == "ok" and d[3] != NO_LANDMARK]
    assert 0 < len(tagged) < len(GOOD)  # the threshold splits them: some tagged, some not
    assert decisions[".pt2"] == decisions[".pt"] and decisions[".onnx"] == decisions[".pt"]


def test_a_torchscript_model_notes_its_deprecation_once_and_the_other_formats_say_nothing(
        photos: Path, models: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    for suffix, path in models.items():
        for command in ("tag", "predict"):
            assert main([command, str(photos / "good.jpg"), "--model", str(path)]) == 0
            notes = [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line]
            if suffix == ".pt" and torch_deprecates_jit():
                assert notes == [f"landmarks: note: {path}: TorchScript is deprecated by torch (`torch.jit.load` is "
                                 "deprecated): use the .pt2 (torch.export) or .onnx predictor instead; the .pt stays "
                                 "for torch versions that cannot load the .pt2"], notes
            else:
                assert notes == [], (suffix, notes)


def test_without_model_the_torch_export_program_is_preferred(
        photos: Path, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    program, torchscript = (Path(p) for p in DEFAULT_MODELS)
    assert (program.as_posix(), torchscript.as_posix()) == ("models/predictor.pt2", "models/predictor.pt")
    program.parent.mkdir()
    shutil.copy(models[".pt2"], program)  # tags every photo
    write_predictor(torchscript, NEVER)  # tags none
    _, rows, err = tag_json(capsys, str(photos / "good.jpg"))
    assert rows[0]["landmark_id"] is not None and err.count("\n") == 1  # the program's answer, no note
    program.write_bytes(b"PK\x03\x04 a broken zip")  # it exists but does not load: TorchScript, with a note
    _, rows, err = tag_json(capsys, str(photos / "good.jpg"))
    assert rows[0]["name"] == NO_LANDMARK
    assert f"landmarks: note: {program} is not a landmarks predictor file" in err and f"using {torchscript}" in err
    program.unlink()  # missing: TorchScript, silently
    _, rows, err = tag_json(capsys, str(photos / "good.jpg"))
    assert rows[0]["name"] == NO_LANDMARK and "using" not in err
    torchscript.unlink()  # neither: the error names the preferred file
    assert main(["tag", str(photos / "good.jpg")]) == 2
    assert "model file 'models/predictor.pt2' not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["junk.pt2", "junk.onnx", "checkpoint.pt2", "program.onnx"])
def test_a_corrupt_or_foreign_pt2_or_onnx_is_a_one_line_usage_error(
        name: str, photos: Path, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / name
    if name.startswith("junk"):
        path.write_bytes(models[Path(name).suffix].read_bytes()[:2000])  # truncated
    elif name == "checkpoint.pt2":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "classes": CLASSES}, path)
    else:
        path.write_bytes(models[".pt2"].read_bytes())
    for command in ("tag", "predict"):
        assert main([command, str(photos / "good.jpg"), "--model", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"landmarks: error: {path} is not a landmarks predictor file")
