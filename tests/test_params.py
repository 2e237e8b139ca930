"""The typed params layer: every bad value stops a stage with one line naming it and what is allowed."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from landmarks.params import (
    DownloadParams, Params, ParamsError, SplitParams, TaggingParams, TransferParams, check_params, load_params, parse,
)
from tests.conftest import REPO


def with_value(params: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    p = copy.deepcopy(params)
    node = p
    *path, last = key.split(".")
    for part in path:
        node = node[part]
    node[last] = value
    return p


def test_the_real_params_yaml_is_valid_and_typed(real_params: dict) -> None:
    params = check_params(real_params)
    assert isinstance(params, Params) and isinstance(params.train_transfer, TransferParams)
    assert params.split.fractions == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert params.train_transfer.image_size == "native" and isinstance(params.download, DownloadParams)


# The list, and a few more: each one line, naming the key, the value and what is allowed.
BAD = [
    ("train_transfer.lr", "abc", "train_transfer.lr='abc' is not valid; use a number > 0"),
    ("train_transfer.image_size", 8, "train_transfer.image_size=8 is not valid; choose one of: native; or use an integer in 32..1024"),
    ("train_transfer.epochs", 1.5, "train_transfer.epochs=1.5 is not valid; use an integer >= 1"),
    ("split.train", 0.9, "split: train=0.9 + val=0.2 + test=0.2 = 1.3; the fractions must add up to 1"),
    ("download.max_bytes", -1, "download.max_bytes=-1 is not valid; use an integer >= 1"),
    ("tagging.precision", 0, "tagging.precision=0 is not valid; use a number in (0, 1]"),
    ("train_scratch.optimizer", "adamax", "train_scratch.optimizer='adamax' is not valid; choose one of: sgd, adam, nadam, adagrad, adamw"),
    ("train_transfer.freeze", "some", "train_transfer.freeze='some' is not valid; choose one of: none, early, all"),
    ("train_transfer.num_workers", -1, "train_transfer.num_workers=-1 is not valid; choose one of: auto; or use an integer >= 0"),
    ("train_scratch.label_smoothing", 1.0, "train_scratch.label_smoothing=1.0 is not valid; use a number in [0, 1)"),
    ("synthetic.num_classes", 19, "synthetic.num_classes=19 is not valid; use an integer in 2..18"),
    ("gldv2.max_classes", 0, "gldv2.max_classes=0 is not valid; use an integer >= 1 or null"),
    ("download.user_agent", "", "download.user_agent='' is not valid; use a non-empty one-line string naming the project and a contact"),
    ("tagging.held_out_classes", "yes", "tagging.held_out_classes='yes' is not valid; use true or false"),
    ("seed", -1, "seed=-1 is not valid; use an integer >= 0"),
    ("dataset", "imagenet", "dataset='imagenet' is not valid; choose one of: synthetic, gldv2, folder"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_one_line_naming_it(real_params: dict, key: str, value: Any, message: str) -> None:
    with pytest.raises(ParamsError) as e:
        check_params(with_value(real_params, key, value))
    assert str(e.value) == message


def test_a_missing_section_an_unknown_key_and_a_missing_key_are_named(real_params: dict) -> None:
    p = copy.deepcopy(real_params)
    del p["tagging"]
    with pytest.raises(ParamsError, match=r"^tagging is missing; params.yaml needs it$"):
        check_params(p)
    with pytest.raises(ParamsError, match=r"^train_transfer\.lrr is not a known setting; known: .*\blr\b"):
        check_params(with_value(real_params, "train_transfer.lrr", 0.1))
    with pytest.raises(ParamsError, match=r"^modle is not a known setting"):
        check_params({**real_params, "modle": "resnet18"})
    p = copy.deepcopy(real_params)
    del p["split"]["val"]
    with pytest.raises(ParamsError, match=r"^split\.val is missing; add it to params.yaml$"):
        check_params(p)
    with pytest.raises(ParamsError, match=r"^download=\[1, 2\] is not valid; params.yaml needs a `download:` section"):
        check_params({**real_params, "download": [1, 2]})


def test_sections_with_defaults_accept_being_left_partly_out() -> None:
    tagging = parse(TaggingParams, "tagging", {"precision": 0.9})
    assert tagging.precision == 0.9 and tagging.score == "knn_msp"
    assert parse(SplitParams, "split", {"train": 0.5, "val": 0.25, "test": 0.25, "min_images_per_class": 3}).val == 0.25


def test_an_unreadable_params_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="is not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


STAGE_CASES = [
    ("train_transfer.lr", "abc"), ("train_transfer.image_size", 8), ("train_transfer.epochs", 1.5),
    ("split.train", 0.9), ("download.max_bytes", -1), ("tagging.precision", 0), ("missing section", None),
    ("unknown key", None),
]


def bad_params(real: dict, case: str, value: Any) -> dict:
    if case == "missing section":
        p = copy.deepcopy(real)
        del p["evaluate"]
        return p
    if case == "unknown key":
        return with_value(real, "train_scratch.epoch", 3)
    return with_value(real, case, value)


@pytest.mark.parametrize("case,value", STAGE_CASES, ids=[c[0] for c in STAGE_CASES])
def test_every_stage_stops_on_a_bad_value_with_one_line_and_a_non_zero_exit(
    tmp_path: Path, real_params: dict, case: str, value: Any
) -> None:
    """A real stage process: exit status 1 and one stderr line, before it touches any data."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad_params(real_params, case, value)))
    stage = "compute_stats" if case != "download.max_bytes" else "download"
    args = ["--splits", "s", "--images", "i", "--out", "o"] if stage == "compute_stats" else \
        ["--selected", "s.csv", "--images", "i", "--failures", "f.csv", "--report", "r.json"]
    proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not any(p.name != "params.yaml" for p in tmp_path.iterdir())  # nothing was written
