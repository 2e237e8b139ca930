"""The `landmarks` command: predict and tag on good and bad photos, exit codes, the console script."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from torch import nn

from landmarks.answers import COLUMNS, FIELDS, NO_LANDMARK, hashtag, load_image
from landmarks.cli import find_images, main
from landmarks.export import build_onnx, build_predictor, build_program
from landmarks.openset import Tagger, build_tagger, gallery_record
from landmarks.predictor_file import load_predictor, onnx_bytes, predictor_bytes, predictor_format, program_bytes
from landmarks.tagging import NEVER
from landmarks.transforms import preprocess_uint8
from tests.test_export import (  # noqa: F401 (one_thread: autouse fixture)
    CLASSES, PREPROCESS, embed, one_thread, tiny_model, tiny_tagger,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.* is deprecated:FutureWarning")

ORIENTATION = 0x0112
GOOD = ["good.jpg", "cmyk.jpg", "gray.png", "gray.jpg", "rgba.png", "deep16.png", "palette.png", "rotated.jpg",
        "big.jpg", "sub/nested.png"]
BAD = {"empty.jpg": "empty_file", "truncated.jpg": "corrupt", "fake.jpg": "not_an_image", "huge.png": "too_large",
       "strip.png": "bad_shape"}


def write_predictor(path: Path, threshold: float, tagger: Tagger | None = None) -> Path:
    """A predictor file of `tagger` (default: the tiny tagger), in the format the path's extension names."""
    tagger = tagger or tiny_tagger(len(CLASSES))
    meta = {"classes": CLASSES, "preprocess": PREPROCESS,
            "tagging": {"threshold": threshold, "target_precision": 0.95, "score": tagger.score, "neighbours": tagger.k}}
    kind = predictor_format(path)
    if kind == "torchscript":
        data = predictor_bytes(build_predictor(tagger, PREPROCESS), **meta)
    elif kind == "torch.export":
        data = program_bytes(build_program(tagger, PREPROCESS), **meta)
    else:
        data = onnx_bytes(build_onnx(tagger, PREPROCESS), **meta)
    path.write_bytes(data)
    return path


def pattern(width: int, height: int, seed: int = 0) -> Image.Image:
    """An asymmetric, colourful test photo: a gradient, a bright corner block and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([255 * x / max(1, width - 1), 255 * y / max(1, height - 1), 128 + 0 * x], axis=-1)
    arr[: height // 3, : width // 4] = (250, 20, 20)
    arr = np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictor that tags every readable photo (threshold -1: the lowest possible knn score)."""
    return write_predictor(tmp_path_factory.mktemp("model") / "predictor.pt", -1.0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with every kind of photo and non-photo the tagger must survive."""
    d = tmp_path_factory.mktemp("photos")
    pattern(64, 48).save(d / "good.jpg", quality=95)
    pattern(60, 40, 1).convert("CMYK").save(d / "cmyk.jpg")
    pattern(50, 70, 2).convert("L").save(d / "gray.png")
    pattern(50, 70, 3).convert("L").save(d / "gray.jpg")
    rgba = pattern(40, 40, 4).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (40, 1))))
    rgba.save(d / "rgba.png")
    Image.fromarray((np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)).save(d / "deep16.png")
    pattern(64, 48, 5).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored landscape, displayed rotated 90 degrees clockwise (portrait)
    pattern(80, 40, 6).save(d / "rotated.jpg", quality=95, exif=exif)
    pattern(400, 300, 7).resize((4000, 3000)).save(d / "big.jpg", quality=80)  # 12 Mpx, allowed
    (d / "sub").mkdir()
    pattern(30, 45, 8).save(d / "sub" / "nested.png")
    (d / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    pattern(64, 64, 9).save(buf, format="JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "fake.jpg").write_text("this is not a photo\n")
    pattern(4000, 3, 11).save(d / "strip.png")  # few pixels, but scaled to the resize size it would need ~1 GB
    Image.new("1", (14000, 14000)).save(d / "huge.png")  # 196 Mpx: over the default decompression-bomb limit
    (d / ".hidden.jpg").write_bytes(buf.getvalue())  # skipped by the folder walk
    (d / "notes.txt").write_text("skipped by the folder walk: not an image extension\n")
    return d


def tag_json(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["tag", *args, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def by_name(rows: list[dict[str, Any]], root: Path) -> dict[str, dict[str, Any]]:
    return {Path(r["path"]).relative_to(root).as_posix(): r for r in rows}


# ----------------------------------------------------------------------------- tag


def test_tag_survives_every_kind_of_bad_input(photos: Path, model: Path, capsys: pytest.CaptureFixture) -> None:
    code, rows, err = tag_json(capsys, str(photos), str(photos / "notes.txt"), str(photos / "missing.jpg"),
                               "--model", str(model), "--batch-size", "4")
    assert code == 1  # some files failed
    rows_by = by_name(rows, photos)
    assert set(rows_by) == set(GOOD) | set(BAD) | {"notes.txt", "missing.jpg"}  # hidden file skipped, .txt only when named
    for name in GOOD:
        r = rows_by[name]
        assert r["status"] == "ok" and r["error"] is None, (name, r)
        assert r["landmark_id"] in {c["landmark_id"] for c in CLASSES} and 0 < r["confidence"] <= 1
        assert -1 <= r["score"] <= 1
    for name, reason in {**BAD, "notes.txt": "not_an_image", "missing.jpg": "not_found"}.items():
        r = rows_by[name]
        assert r["status"] == "error" and r["error"].startswith(reason), (name, r)
        assert r["landmark_id"] is None and r["confidence"] is None and r["score"] is None
    assert f"{len(rows)} files: {len(GOOD)} tagged, 0 no landmark, {len(BAD) + 2} failed" in err


def test_tag_rows_carry_name_hashtag_and_category(photos: Path, model: Path, capsys: pytest.CaptureFixture) -> None:
    code, rows, _ = tag_json(capsys, str(photos / "good.jpg"), "--model", str(model))
    assert code == 0 and len(rows) == 1
    r = rows[0]
    assert list(r) == list(FIELDS) == [*COLUMNS, "top5"]
    c = next(c for c in CLASSES if c["landmark_id"] == r["landmark_id"])
    assert r["name"] == c["name"] and r["hashtag"] == hashtag(c["name"]) and r["category"] == c["category"]
    assert r["wikidata_id"] == (c["wikidata_id"] or None) and r["latitude"] == (c["latitude"] or None)


def test_json_rows_rank_the_top_landmarks_and_csv_leaves_them_out(photos: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    strict = write_predictor(tmp_path / "strict.pt", NEVER)  # "no landmark" photos still get their top landmarks
    _, rows, _ = tag_json(capsys, str(photos / "good.jpg"), str(photos / "empty.jpg"), "--model", str(strict))
    ok, error = rows
    assert ok["name"] == NO_LANDMARK and error["top5"] is None
    probabilities = [t["probability"] for t in ok["top5"]]
    assert len(ok["top5"]) == len(CLASSES) and probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] == ok["confidence"] and sum(probabilities) == pytest.approx(1, abs=1e-5)
    assert {t["landmark_id"] for t in ok["top5"]} == {c["landmark_id"] for c in CLASSES}
    assert ok["top5"][0]["name"] in {c["name"] for c in CLASSES}
    assert main(["tag", str(photos / "good.jpg"), "--model", str(strict)]) == 0
    assert "top5" not in capsys.readouterr().out


def test_tag_writes_csv_to_stdout_or_a_file(photos: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["tag", str(photos / "good.jpg"), str(photos / "empty.jpg"), "--model", str(model)]) == 1
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(table[0]) == list(COLUMNS)
    assert COLUMNS.index("score") == COLUMNS.index("confidence") + 1
    assert [r["status"] for r in table] == ["ok", "error"]
    assert table[1]["landmark_id"] == "" and table[1]["error"].startswith("empty_file")
    assert table[1]["score"] == "" and table[1]["confidence"] == ""
    assert table[0]["hashtag"].startswith("#") and float(table[0]["confidence"]) > 0
    assert -1 <= float(table[0]["score"]) <= 1
    out = tmp_path / "tags.csv"
    assert main(["tag", str(photos / "good.jpg"), "--model", str(model), "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert list(csv.DictReader(out.open()))[0]["name"] == table[0]["name"]


def test_below_the_threshold_the_answer_is_no_landmark(photos: Path, model: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    files = [str(photos / n) for n in ("good.jpg", "gray.png", "rgba.png", "palette.png")]
    _, rows, _ = tag_json(capsys, *files, "--model", str(model))
    scores = sorted(r["score"] for r in rows)
    assert scores[0] < scores[-1], "the test needs photos with different scores"
    cut = (scores[0] + scores[-1]) / 2
    strict = write_predictor(tmp_path / "strict.pt", cut)
    code, rows2, err = tag_json(capsys, *files, "--model", str(strict))
    assert code == 0
    for before, after in zip(rows, rows2):
        assert after["status"] == "ok" and after["confidence"] == before["confidence"] and after["score"] == before["score"]
        if before["score"] >= cut:
            assert after["landmark_id"] == before["landmark_id"] and after["name"] == before["name"]
        else:
            assert after["name"] == NO_LANDMARK
            assert after["landmark_id"] is None and after["hashtag"] is None and after["category"] is None
    tagged = sum(r["score"] >= cut for r in rows)
    assert f"{len(files)} files: {tagged} tagged, {len(files) - tagged} no landmark, 0 failed" in err


def photo_tensor(path: Path) -> torch.Tensor:
    return load_image(path, resize_size=PREPROCESS["resize_size"])


def gallery_of(model: nn.Module, photo: Path, sign: float) -> dict[str, torch.Tensor]:
    """One gallery row per class, each `sign` x the photo's own embedding: its knn score is `sign` (cosine +-1)."""
    e = embed(model, [photo_tensor(photo)])
    return gallery_record(sign * e.repeat(len(CLASSES), 1), torch.arange(len(CLASSES)))


def test_the_score_decides_not_the_probability(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photo = photos / "good.jpg"
    # confident, but unlike any training photo: the score (cosine -1) is below the threshold
    confident = tiny_model(len(CLASSES))
    tagger = build_tagger(confident, {"gallery": gallery_of(confident, photo, -1.0)}, score="knn", k=3)
    code, rows, _ = tag_json(capsys, str(photo), "--model", str(write_predictor(tmp_path / "a.pt", 0.5, tagger)))
    r = rows[0]
    assert code == 0 and r["status"] == "ok"
    assert r["confidence"] > 0.9 and r["score"] == pytest.approx(-1.0, abs=1e-3)
    assert r["name"] == NO_LANDMARK and r["landmark_id"] is None and r["hashtag"] is None
    # unsure between the landmarks, but just like the training photos: the score (cosine 1) reaches the threshold
    unsure = tiny_model(len(CLASSES))
    with torch.no_grad():
        unsure.classifier[-1].weight.mul_(0.001)
    with torch.no_grad():
        probs = torch.softmax(unsure(preprocess_uint8(photo_tensor(photo).unsqueeze(0), **PREPROCESS)), -1)[0]
    tagger = build_tagger(unsure, {"gallery": gallery_of(unsure, photo, 1.0)}, score="knn", k=3)
    code, rows, _ = tag_json(capsys, str(photo), "--model", str(write_predictor(tmp_path / "b.pt", 0.9, tagger)))
    r = rows[0]
    assert code == 0 and r["confidence"] < 0.5 and r["score"] == pytest.approx(1.0, abs=1e-3)
    assert r["landmark_id"] == CLASSES[int(probs.argmax())]["landmark_id"] and r["name"] != NO_LANDMARK
    # the same predictor with a threshold above every score answers "no landmark", and says why
    never = write_predictor(tmp_path / "never.pt", NEVER, tagger)
    code, rows, err = tag_json(capsys, str(photo), "--model", str(never))
    assert rows[0]["name"] == NO_LANDMARK and rows[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert "never reached its target precision" in err
    assert main(["predict", str(photo), "--model", str(never)]) == 0
    assert "this model tags nothing" in capsys.readouterr().out


class OldPredictor(nn.Module):
    """A predictor file from before the open-set score: forward only, no tag()."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = preprocess_uint8(x, 32, 37, [0.45, 0.46, 0.40], [0.22, 0.21, 0.23])
        return torch.softmax(self.network(y), dim=-1)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_old_predictor_files_are_scored_by_their_top_probability(photos: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    assert PREPROCESS["resize_size"] == 37 and PREPROCESS["image_size"] == 32
    net = torch.jit.trace(tiny_model(len(CLASSES)), torch.zeros(1, 3, 32, 32))
    module = torch.jit.script(OldPredictor(net).eval())
    buf = io.BytesIO()
    torch.jit.save(module, buf, _extra_files={"classes.json": json.dumps(CLASSES), "preprocess.json": json.dumps(PREPROCESS),
                                              "tagging.json": json.dumps({"threshold": 0.5})})
    path = tmp_path / "old.pt"
    path.write_bytes(buf.getvalue())
    predictor = load_predictor(path)
    assert not hasattr(predictor.module, "tag")
    x = photo_tensor(photos / "good.jpg").unsqueeze(0)
    probs, scores = predictor(x)
    assert scores.tolist() == pytest.approx(probs.max(axis=1).tolist())
    _, rows, _ = tag_json(capsys, str(photos / "good.jpg"), "--model", str(path))
    assert rows[0]["score"] == rows[0]["confidence"]
    assert (rows[0]["name"] == NO_LANDMARK) == (rows[0]["confidence"] < 0.5)


def test_batched_tagging_equals_one_image_at_a_time(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture) -> None:
    sizes = [(64, 48)] * 6 + [(48, 64)] * 3 + [(30 + 7 * i, 41 + 3 * i) for i in range(9)]  # shared and unique sizes
    for i, (w, h) in enumerate(sizes):
        pattern(w, h, 100 + i).save(tmp_path / f"p{i:02d}.png")
    _, one, _ = tag_json(capsys, str(tmp_path), "--model", str(model), "--batch-size", "1")
    _, batched, _ = tag_json(capsys, str(tmp_path), "--model", str(model), "--batch-size", "2")  # also hits the flush limit
    assert [r["path"] for r in one] == [r["path"] for r in batched] == sorted(str(p) for p in tmp_path.glob("*.png"))
    assert [r["landmark_id"] for r in one] == [r["landmark_id"] for r in batched]
    np.testing.assert_allclose([r["confidence"] for r in one], [r["confidence"] for r in batched], atol=2e-6)
    np.testing.assert_allclose([r["score"] for r in one], [r["score"] for r in batched], atol=2e-6)


def test_exif_orientation_is_honoured(photos: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = Image.open(photos / "rotated.jpg")
    assert raw.size == (80, 40)
    upright = raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)  # what orientation 6 means
    x = load_image(photos / "rotated.jpg", resize_size=PREPROCESS["resize_size"])
    assert tuple(x.shape) == (3, 80, 40)
    assert torch.equal(x, torch.from_numpy(np.array(upright)).permute(2, 0, 1))
    upright.save(tmp_path / "upright.png")
    raw.convert("RGB").save(tmp_path / "sideways.png")
    _, rows, _ = tag_json(capsys, str(photos / "rotated.jpg"), str(tmp_path / "upright.png"), str(tmp_path / "sideways.png"),
                          "--model", str(model))
    rotated, manual, sideways = rows
    assert rotated["landmark_id"] == manual["landmark_id"] and rotated["confidence"] == pytest.approx(manual["confidence"], abs=1e-6)
    assert abs(sideways["confidence"] - rotated["confidence"]) > 1e-4  # the model does see the difference


def test_big_jpegs_are_decoded_in_draft_mode_and_huge_ones_refused(photos: Path) -> None:
    x = load_image(photos / "big.jpg", resize_size=PREPROCESS["resize_size"])
    assert PREPROCESS["resize_size"] <= min(x.shape[1:]) < 3000  # reduced by libjpeg, never below the resize size
    assert max(x.shape[1:]) / min(x.shape[1:]) == pytest.approx(4 / 3, rel=0.01)
    with pytest.raises(Exception, match="too_large"):
        load_image(photos / "good.jpg", resize_size=PREPROCESS["resize_size"], max_pixels=1000)


def test_folder_walk_is_recursive_sorted_and_skips_hidden_and_non_images(photos: Path) -> None:
    found = [p.relative_to(photos).as_posix() for p in find_images([str(photos)])]
    # a folder's own files (sorted) come before its sub-folders'; hidden files and non-images are skipped
    assert found == sorted(n for n in [*GOOD, *BAD] if "/" not in n) + ["sub/nested.png"]
    assert find_images([str(photos / "good.jpg"), str(photos / "good.jpg")]) == [photos / "good.jpg"]


# ----------------------------------------------------------------------------- predict


def ranked_lines(out: str) -> list[str]:
    """The `  1. Name   0.1234` lines of predict's output."""
    return [line for line in out.splitlines() if re.match(r"\s+\d+\. ", line)]


def test_predict_prints_top_k_and_draws_a_plot(photos: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plot = tmp_path / "out.png"
    code = main(["predict", str(photos / "good.jpg"), str(photos / "cmyk.jpg"), "--top-k", "2", "--model", str(model),
                 "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(photos / "good.jpg") and lines[4] == str(photos / "cmyk.jpg")
    ranked = ranked_lines(out)
    assert [line.split()[0] for line in ranked] == ["1.", "2.", "1.", "2."]
    probs = [float(line.split()[-1]) for line in ranked]
    assert probs[0] >= probs[1] and probs[2] >= probs[3]
    # the top-1 agrees with `tag`
    _, rows, _ = tag_json(capsys, str(photos / "good.jpg"), "--model", str(model))
    assert rows[0]["name"] in ranked[0] and f"{rows[0]['confidence']:.4f}" in ranked[0]
    assert f"-> {rows[0]['name']} {rows[0]['hashtag']}" in out
    assert Image.open(plot).format == "PNG"


def test_predict_top_k_is_capped_and_bad_files_give_exit_1(photos: Path, model: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["predict", str(photos / "truncated.jpg"), str(photos / "gray.png"), "--top-k", "50", "--model", str(model)])
    out = capsys.readouterr()
    assert code == 1
    assert "truncated.jpg: error: corrupt" in out.err
    assert len(ranked_lines(out.out)) == len(CLASSES)  # --top-k 50 lists the 3 classes there are


# ----------------------------------------------------------------------------- errors and the console script


def test_missing_or_unusable_model_is_a_one_line_error(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["tag", str(photos / "good.jpg"), "--model", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "nope.pt" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    assert main(["predict", str(photos / "good.jpg"), "--model", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a landmarks predictor" in err


@pytest.mark.parametrize("argv", [[], ["tag"], ["predict"], ["tag", "x.jpg", "--batch-size", "0"],
                                  ["predict", "x.jpg", "--top-k", "0"], ["frobnicate", "x.jpg"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_hashtags_are_ascii_camel_case() -> None:
    assert hashtag("Eiffel Tower") == "#EiffelTower"
    assert hashtag("Château de Versailles") == "#ChateauDeVersailles"
    assert hashtag("St. Peter's Basilica") == "#StPetersBasilica"
    assert hashtag("Tweed Heads, New South Wales") == "#TweedHeadsNewSouthWales"
    assert hashtag("Santa Maria Immacolata della Concezione (Rome)") == "#SantaMariaImmacolataDellaConcezioneRome"
    assert hashtag("Straße des 17. Juni") == "#StrasseDes17Juni"
    assert hashtag("Łazienki Park") == "#LazienkiPark"
    assert hashtag("东方明珠塔") == ""


def test_installed_console_script(photos: Path, model: Path) -> None:
    script = shutil.which("landmarks") or str(Path(sys.executable).parent / "landmarks")
    assert Path(script).exists(), "the `landmarks` console script is not installed (pip install -e .)"
    proc = subprocess.run([script, "tag", str(photos / "good.jpg"), str(photos / "empty.jpg"), "--json", "--model", str(model),
                           "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["status"] for r in rows] == ["ok", "error"]
