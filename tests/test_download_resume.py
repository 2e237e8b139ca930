"""A download killed midway (SIGKILL) leaves no partial images, and a rerun finishes the job
without fetching anything twice: directly and through `dvc repro` with `persist: true`."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from landmarks.imageio import decode_image
from tests.faultserver import FaultServer, Respond, make_jpeg

REPO = Path(__file__).resolve().parents[1]
NUM_IMAGES = 300
MISSING = {7, 77, 177}  # rows whose URL is a 404, so the failures CSV takes part in the comparison
KILL_AFTER = 60  # stored images


@pytest.fixture(scope="module")
def server():
    # 30 ms per request and 8 workers: ~1-2 s for the whole download, time enough to kill it midway.
    with FaultServer(latency=0.03) as s:
        rows = []
        for n in range(NUM_IMAGES):
            image_id = f"{(n * 0x9E3779B97F4A7C15) % 2**64:016x}"
            path = f"/img/{image_id}.jpg"
            if n in MISSING:
                s.route(path, Respond(404))
            else:
                s.route(path, Respond(body=make_jpeg(96 + n % 40, 72, seed=n)))
            rows.append((image_id, s.url(path), n % 6))
        s.rows = pd.DataFrame(rows, columns=["id", "url", "landmark_id"])
        yield s


def make_project(root: Path, server: FaultServer) -> Path:
    root.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"] = "gldv2"
    # Two worker processes whatever the machine: a kill must leave no partial image behind them either.
    params["download"].update(workers=8, processes=2, image_size=48, connect_timeout=2.0, read_timeout=5.0, max_retries=1, backoff=0.01)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    server.rows.to_csv(root / "selected.csv", index=False)
    return root


STAGE_ARGS = ["--selected", "selected.csv", "--images", "images", "--failures", "failures.csv", "--report", "report.json"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "DVC_NO_ANALYTICS": "1"}


def stored(images: Path) -> dict[str, bytes]:
    return {str(p.relative_to(images)): p.read_bytes() for p in images.rglob("*.jpg")}


def kill_midway(cmd: list[str], cwd: Path) -> None:
    """Start `cmd` in its own process group and SIGKILL the whole group once KILL_AFTER images exist."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while len(list((cwd / "images").rglob("*.jpg"))) < KILL_AFTER:
            if proc.poll() is not None:
                raise AssertionError(f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no progress")
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group: dvc and the stage it runs
        proc.wait()
        proc.stderr.close()


def check_no_partial_images(images: Path) -> dict[str, bytes]:
    files = [p for p in images.rglob("*") if p.is_file()]
    jpgs = [p for p in files if p.suffix == ".jpg"]
    # A killed atomic write can leave only a hidden temp file, never a partial image.
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in files if p not in jpgs)
    for p in jpgs:
        decode_image(p)  # raises on a truncated file
    assert KILL_AFTER <= len(jpgs) < NUM_IMAGES - len(MISSING)
    return stored(images)


def check_complete(root: Path, server: FaultServer, before: dict[str, bytes], reference: Path) -> None:
    fetched = {path.rsplit("/", 1)[-1].removesuffix(".jpg") for path, _ in server.requests}
    assert not fetched & {Path(p).stem for p in before}, "an image stored before the kill was downloaded again"
    after = stored(root / "images")
    assert len(after) == NUM_IMAGES - len(MISSING)
    assert all(after[p] == data for p, data in before.items())
    assert not [p for p in (root / "images").rglob("*") if p.name.endswith(".tmp")]
    # Same end state as a run that was never interrupted.
    assert after == stored(reference / "images")
    assert (root / "failures.csv").read_text() == (reference / "failures.csv").read_text()
    assert len(pd.read_csv(root / "failures.csv")) == len(MISSING)


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("ref") / "project", server)
    subprocess.run([sys.executable, "-m", "stages.download", *STAGE_ARGS], cwd=root, env=env(), check=True,
                   capture_output=True)
    return root


def test_killed_download_resumes_without_downloading_again(server, reference, tmp_path):
    root = make_project(tmp_path / "project", server)
    cmd = [sys.executable, "-m", "stages.download", *STAGE_ARGS]
    kill_midway(cmd, root)
    before = check_no_partial_images(root / "images")
    server.clear_log()
    subprocess.run(cmd, cwd=root, env=env(), check=True, capture_output=True)
    check_complete(root, server, before, reference)


DVC_YAML = """\
stages:
  download:
    cmd: {python} -m stages.download {args}
    deps:
      - selected.csv
    params:
      - dataset
      - download
    outs:
      - images:
          persist: true
      - failures.csv
    metrics:
      - report.json:
          cache: false
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_killed_dvc_repro_resumes_without_downloading_again(server, reference, tmp_path):
    root = make_project(tmp_path / "project", server)
    (root / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable, args=" ".join(STAGE_ARGS)))
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=root, env=env(), check=True)

    kill_midway([*dvc, "repro", "-q"], root)
    before = check_no_partial_images(root / "images")
    server.clear_log()
    proc = subprocess.run([*dvc, "repro", "-q"], cwd=root, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_complete(root, server, before, reference)
    status = subprocess.run([*dvc, "status", "-q"], cwd=root, env=env())
    assert status.returncode == 0  # the pipeline is up to date
