"""The predictor files in a fresh interpreter: loaded by their runtime's own API with no project code (what a
service does), and the export's own fresh-process check, which must be able to fail."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landmarks.export import FORBIDDEN_MODULES, TOLERANCES, check_in_fresh_process, fresh_process_script, reference_outputs
from landmarks.openset import Tagger
from tests.test_export import (  # noqa: F401 (exported, one_thread: fixtures)
    CLASSES, FORMATS, PREPROCESS, TAGGING, exported, one_thread, random_images,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.* is deprecated:FutureWarning")


def test_fresh_process_check_can_fail(tmp_path: Path, exported: tuple[dict[str, Path], Tagger, dict]) -> None:
    paths, _, _ = exported
    # the runtime is always imported: forbidding it must be caught (the same lines check every format)
    with pytest.raises(RuntimeError, match=r"the onnx predictor .*imported \['onnxruntime'\]"):
        check_in_fresh_process(paths["onnx"], len(CLASSES), forbidden=("onnxruntime",))
    with pytest.raises(RuntimeError, match="has 3 classes, expected 4"):
        check_in_fresh_process(paths["onnx"], 4)
    for kind, name in FORMATS.items():  # each format's script loads the file it is given
        junk = tmp_path / name
        junk.write_bytes(b"not a model")
        with pytest.raises(RuntimeError, match=f"the {kind} predictor does not load in a fresh process"):
            check_in_fresh_process(junk, len(CLASSES))
    assert set(FORBIDDEN_MODULES) == {"landmarks", "torchvision", "timm"}


# Loads a predictor file with its runtime's own API (no landmarks code), runs it on the images of an .npz
# one at a time, and prints {"rows": [[probabilities..., score]...], "records": {...}, "modules": [...]}.
PLAIN_RUNTIME = {
    "torchscript": """
import torch
records = dict.fromkeys(["classes.json", "tagging.json", "preprocess.json"], "")
m = torch.jit.load(path, _extra_files=records)
def run(x):
    p, s = m.tag(torch.from_numpy(x))
    return p.tolist(), s.tolist()
""",
    "torch.export": """
import torch
records = dict.fromkeys(["classes.json", "tagging.json", "preprocess.json"], "")
m = torch.export.load(path, extra_files=records).module()
def run(x):
    p, s = m(torch.from_numpy(x))
    return p.tolist(), s.tolist()
""",
    "onnx": """
import onnxruntime
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
records = dict(session.get_modelmeta().custom_metadata_map)
def run(x):
    p, s = session.run(["probabilities", "scores"], {"images": x})
    return p.tolist(), s.tolist()
""",
}
PLAIN_MAIN = """
records = {k: v.decode() if isinstance(v, bytes) else v for k, v in records.items()}  # torch.jit gives bytes
rows = []
for name in sorted(images.files, key=lambda n: int(n)):
    p, s = run(images[name][None])
    rows.append(p[0] + [s[0]])
print(json.dumps({"rows": rows, "records": records, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("kind", list(FORMATS))
def test_each_file_runs_like_the_eager_model_in_a_fresh_process_without_landmarks_or_torchvision(
        kind: str, exported: tuple[dict[str, Path], Tagger, dict], tmp_path: Path) -> None:
    """What a service does: a bare interpreter (-I: no project on the path) with the file's runtime alone gets
    the eager tagger's probabilities and scores, and so its tag decisions, with the threshold inside the file."""
    paths, tagger, _ = exported
    images = random_images([(48, 64), (300, 200), (17, 90), (32, 32)], seed=7)
    np.savez(tmp_path / "images.npz", **{str(i): img.numpy() for i, img in enumerate(images)})
    code = ("import json, sys\nimport numpy as np\npath = sys.argv[1]\nimages = np.load(sys.argv[2])\n"
            + PLAIN_RUNTIME[kind] + PLAIN_MAIN)
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(paths[kind]), str(tmp_path / "images.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    top = {m.split(".")[0] for m in out["modules"]}
    assert "landmarks" not in top and "torchvision" not in top and "timm" not in top
    assert ("torch" in top) == (kind != "onnx")  # the ONNX file needs no torch at all
    got = torch.tensor(out["rows"])
    expected = torch.stack(reference_outputs(tagger, PREPROCESS, images))
    assert (got - expected).abs().max().item() <= TOLERANCES[kind]
    threshold = json.loads(out["records"]["tagging.json"])["threshold"]
    assert threshold == TAGGING["threshold"] and json.loads(out["records"]["classes.json"]) == CLASSES

    def decisions(rows: torch.Tensor) -> list[int | None]:  # the class tagged, or None: "no landmark"
        return [int(r[:-1].argmax()) if r[-1] >= threshold else None for r in rows]

    assert decisions(got) == decisions(expected)


def test_each_fresh_process_script_imports_only_its_runtime() -> None:
    """The scripts import their runtime alone: torch (.pt, .pt2), or onnxruntime, numpy and json (.onnx)."""
    for kind in FORMATS:
        tree = ast.parse(fresh_process_script(kind))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported == ({"json", "sys", "numpy", "onnxruntime"} if kind == "onnx" else {"json", "sys", "torch"}), kind
