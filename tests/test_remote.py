"""A team shares data and models through a DVC remote, and runs a sweep from the queue: the README's
commands, end to end, on the shared tiny pipeline run (tests/conftest.py: built_project)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import BIN, copy_built, dvc, dvc_env, git, ran_stages, run

pytestmark = pytest.mark.slow

# Every output DVC caches (dvc.yaml outs without `cache: false`), and so pushes and pulls.
CACHED_OUTS = {"data/raw", "data/selected.csv", "data/classes.csv", "data/images", "data/download_failures.csv",
               "data/splits", "data/stats.json", "models/scratch.pt", "models/transfer.pt", "models/predictor.pt",
               "models/predictor.pt2", "models/predictor.onnx"}
SWEEP = (0.9, 0.99)          # tagging.precision: reruns only evaluate and export
QUEUE_DEADLINE = 420         # seconds for both queued experiments, a hang guard: each took about 40 s on 2 busy cores


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def remote_has(storage: Path, path: Path) -> bool:
    """Whether a DVC 3 remote holds the content of the file at `path` (files/md5/<2>/<30>)."""
    digest = md5(path)
    return (storage / "files" / "md5" / digest[:2] / digest[2:]).is_file()


@pytest.fixture(scope="module")
def team(built_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The owner's project with a local-directory remote committed in .dvc/config (as a team would commit
    theirs), pushed; then a colleague's `git clone` of it in another folder, pulled."""
    root = tmp_path_factory.mktemp("team")
    origin = copy_built(built_project, root / "origin")
    storage = root / "storage"
    dvc(origin, "remote", "add", "-d", "storage", str(storage))
    git(origin, "add", ".dvc/config")
    git(origin, "commit", "-qm", "share data and models through the team's remote")
    missing = json.loads(dvc(origin, "status", "--cloud", "--json").stdout)
    push = dvc(origin, "push")
    in_sync = dvc(origin, "status", "--cloud").stdout

    # The colleague: git brings code, params, dvc.lock and the git-tracked reports, nothing else.
    clone = root / "colleague"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=root, env=dvc_env(clone))
    fresh = {"cache": (clone / ".dvc/cache").exists(), "predictor": (clone / "models/predictor.pt").exists(),
             "images": (clone / "data/images").exists(), "cache_dir": dvc(clone, "cache", "dir").stdout.strip()}
    pull = dvc(clone, "pull")
    status = dvc(clone, "status").stdout
    repro = dvc(clone, "repro").stdout
    return {"origin": origin, "storage": storage, "clone": clone, "missing": missing, "push": push.stdout,
            "in_sync": in_sync, "fresh": fresh, "pull": pull.stdout, "status": status, "repro": repro}


def test_push_sends_every_cached_output_and_no_git_tracked_report(team: dict[str, Any]) -> None:
    origin, storage = team["origin"], team["storage"]
    missing = team["missing"]  # `dvc status --cloud --json` before the push: {path: "new"} per file and output
    assert set(missing.values()) == {"new"}, missing
    assert CACHED_OUTS <= set(missing), sorted(CACHED_OUTS - set(missing))
    # data/images is `persist: true`: DVC still caches and pushes it like any output.
    assert sum(p.startswith("data/images/") for p in missing) == 50
    assert not [p for p in missing if p.startswith("reports/")], "cache: false outputs are not DVC's to push"
    assert "Cache and remote 'storage' are in sync." in team["in_sync"]
    assert remote_has(storage, origin / "models/predictor.pt") and remote_has(storage, origin / "data/stats.json")
    # Metrics, plots, tagging.json, figures: `cache: false`, committed to git, never in the remote.
    for report in ("reports/metrics.json", "reports/tagging.json", "reports/train/transfer/metrics.json"):
        assert not remote_has(storage, origin / report), report


def test_fresh_clone_has_its_own_empty_cache_and_no_data_until_pull(team: dict[str, Any]) -> None:
    clone = team["clone"]
    assert team["fresh"] == {"cache": False, "predictor": False, "images": False, "cache_dir": str(clone / ".dvc/cache")}
    assert re.search(r"\d+ files? fetched", team["pull"]), team["pull"]
    assert (clone / "reports/metrics.json").read_text() == (team["origin"] / "reports/metrics.json").read_text()


def test_after_pull_repro_runs_no_stage(team: dict[str, Any]) -> None:
    assert "Data and pipelines are up to date." in team["status"], team["status"]
    assert ran_stages(team["repro"]) == [], team["repro"]
    clone, origin = team["clone"], team["origin"]
    for out in ("models/predictor.pt", "models/predictor.pt2", "models/predictor.onnx", "models/transfer.pt",
                "data/stats.json"):
        assert md5(clone / out) == md5(origin / out), out
    assert git(clone, "status", "--porcelain").stdout == ""


def test_landmarks_predict_works_from_the_pulled_predictor(team: dict[str, Any]) -> None:
    clone = team["clone"]
    test = pd.read_csv(clone / "data/splits/test.csv", dtype={"id": str})
    known = test[test["landmark_id"] != -1].iloc[0]
    image = Path("data/images") / str(known["landmark_id"]) / f"{known['id']}.jpg"
    out = run([str(BIN / "landmarks"), "predict", str(image), "--top-k", "3"], cwd=clone, env=dvc_env(clone)).stdout
    lines = out.splitlines()
    assert lines[0] == str(image), out
    ranked = [re.fullmatch(r"\s+\d\. (.+?)\s+([01]\.\d{4})", line) for line in lines[1:4]]
    assert all(ranked), out
    names = set(pd.read_csv(clone / "data/splits/classes.csv")["name"])
    assert {m.group(1) for m in ranked} == names, out  # 3 classes, top 3: every class once
    assert sum(float(m.group(2)) for m in ranked) == pytest.approx(1, abs=2e-4)
    assert lines[4].lstrip().startswith("->"), out


def queue_rows(root: Path) -> tuple[dict[str, str], str]:
    """`dvc queue status` as {experiment name: Queued/Running/Success/Failed/...}, and its worker line."""
    out = dvc(root, "queue", "status").stdout
    rows = dict(re.findall(r"^[0-9a-f]{7}\s+(\S+)\s+.*?\s(\w+)\s*$", out, flags=re.M))
    worker = next((line for line in out.splitlines() if line.startswith("Worker status")), "")
    return rows, worker


@pytest.fixture(scope="module")
def sweep(built_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Queue a two-value sweep in one command, run it with one queue worker, wait (bounded) for both."""
    root = copy_built(built_project, tmp_path_factory.mktemp("sweep") / "project")
    values = ",".join(str(v) for v in SWEEP)
    queued = dvc(root, "exp", "run", "--queue", "-S", f"tagging.precision={values}").stdout
    # The queue start forks a helper that keeps our stdout until the worker exits: a pipe here would turn
    # the call into a wait of unbounded length, so its output goes to a file and we poll the queue instead.
    log = root.parent / "queue-start.log"
    with log.open("w") as f:
        subprocess.run([str(BIN / "dvc"), "queue", "start", "--jobs", "1"], cwd=root, env=dvc_env(root),
                       stdout=f, stderr=subprocess.STDOUT, check=True, timeout=120)
    start, rows, worker = time.monotonic(), {}, ""
    try:
        while time.monotonic() - start < QUEUE_DEADLINE:
            time.sleep(5)
            rows, worker = queue_rows(root)
            if len(rows) == len(SWEEP) and not {"Queued", "Running"} & set(rows.values()):
                break
        else:
            pytest.fail(f"queue not done in {QUEUE_DEADLINE} s: {rows} {worker}\n{log.read_text()}")
        shown = json.loads(dvc(root, "exp", "show", "--json").stdout)
        logs = {name: dvc(root, "queue", "logs", name).stdout for name in rows}
    finally:
        stop_queue(root)
    return {"root": root, "queued": queued, "rows": rows, "worker": worker, "shown": shown, "logs": logs}


def stop_queue(root: Path, grace: float = 20) -> None:
    """Make sure no queue worker outlives the test, even when the queue hung or DVC could not stop it.

    Workers leave by themselves 10 s after the queue empties; `dvc queue stop --kill` covers a stuck task;
    the worker's own pid file (celery writes it) is the last resort, as the worker is a daemon, not our child."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run([str(BIN / "dvc"), "queue", "stop", "--kill"], cwd=root, env=dvc_env(root),
                       capture_output=True, timeout=60)
    pids = [int(text) for f in (root / ".dvc/tmp/exps/celery").glob("*.pid") if (text := read_or_empty(f)).isdigit()]
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if alive(pid)]
        time.sleep(0.5)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def read_or_empty(path: Path) -> str:
    """A pid file's content; celery removes the file as its worker exits, possibly while we look."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def experiments(shown: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` -> {experiment name: {"executor": ..., "data": {...}}} for the baseline's experiments."""
    found = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev["name"]] = {"executor": exp.get("executor"), "data": rev["data"]}
    return found


def test_queued_sweep_runs_both_experiments_with_their_params_and_metrics(sweep: dict[str, Any]) -> None:
    assert sweep["queued"].count("Queued experiment") == len(SWEEP), sweep["queued"]
    assert set(sweep["rows"].values()) == {"Success"}, sweep
    exps = experiments(sweep["shown"])
    assert set(exps) == set(sweep["rows"]), (exps.keys(), sweep["rows"])
    precisions = {}
    for name, exp in exps.items():
        assert exp["executor"]["state"] == "success" and exp["executor"]["name"] == "dvc-task", exp["executor"]
        params = exp["data"]["params"]["params.yaml"]["data"]
        precisions[name] = params["tagging"]["precision"]
        metrics = exp["data"]["metrics"]["reports/metrics.json"]["data"]
        for model in ("scratch", "transfer"):
            assert 0 <= metrics[model]["top1"] <= metrics[model]["top5"] <= 1, metrics
        # Upstream stages were restored in the experiment's temp workspace, not rerun.
        assert ran_stages(sweep["logs"][name]) == ["evaluate", "export"], sweep["logs"][name]
    assert sorted(precisions.values()) == list(SWEEP), precisions


def test_queued_experiments_commit_their_reports_and_leave_the_workspace_alone(sweep: dict[str, Any]) -> None:
    root = sweep["root"]
    for name, exp in experiments(sweep["shown"]).items():
        tagging = json.loads(git(root, "show", f"{exp['data']['rev']}:reports/tagging.json").stdout)
        assert tagging["target_precision"] == exp["data"]["params"]["params.yaml"]["data"]["tagging"]["precision"]
    assert git(root, "status", "--porcelain").stdout == ""
    assert "precision: 0.95" in (root / "params.yaml").read_text()
