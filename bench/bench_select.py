"""Time and peak memory of select_classes on a GLDv2-sized train.csv.

Writes a synthetic train.csv with the real file's shape (4,132,914 rows, 203,094 landmarks,
a long-tailed images-per-landmark distribution, 16-hex ids, percent-encoded Commons URLs with
http and https mixed) into a temp dir, then runs `python -m stages.select_classes` on it in a
subprocess and reports its wall time and peak RSS (ru_maxrss of the child).
Target: <= 20 s and <= 2 GB.   Run from the repo root: `python bench/bench_select.py`.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
NUM_ROWS = 4_132_914
NUM_LANDMARKS = 203_094
MAX_PER_LANDMARK = 6_272  # the largest class of the real train.csv


def long_tail_counts(rng: np.random.Generator, num_rows: int, num_landmarks: int) -> np.ndarray:
    """Images per landmark following a power law like GLDv2's: a few huge classes, most tiny."""
    ranks = np.arange(1, num_landmarks + 1, dtype=np.float64)
    # Exponent chosen so that the largest class is ~MAX_PER_LANDMARK when the total is num_rows.
    lo, hi = 0.1, 2.0
    for _ in range(60):
        alpha = (lo + hi) / 2
        weights = ranks**-alpha
        top = num_rows * weights[0] / weights.sum()
        lo, hi = (alpha, hi) if top < MAX_PER_LANDMARK else (lo, alpha)
    counts = np.maximum(1, np.floor(num_rows * weights / weights.sum())).astype(np.int64)
    # Hand the rounding remainder to random landmarks so the total is exact.
    diff = num_rows - int(counts.sum())
    if diff > 0:
        np.add.at(counts, rng.integers(0, num_landmarks, diff), 1)
    elif diff < 0:
        big = np.flatnonzero(counts > 1)
        np.add.at(counts, rng.choice(big, -diff, replace=True), -1)
        counts = np.maximum(counts, 1)
    return rng.permutation(counts)  # landmark ids are not ordered by size in the real file


def write_train_csv(path: Path, seed: int = 0) -> dict[str, int]:
    """Write the GLDv2-like train.csv; return its shape."""
    rng = np.random.default_rng(seed)
    counts = long_tail_counts(rng, NUM_ROWS, NUM_LANDMARKS)
    landmark = rng.permutation(np.repeat(np.arange(NUM_LANDMARKS, dtype=np.int64), counts))
    ids = rng.integers(0, 2**63, size=len(landmark), dtype=np.int64)
    name_len = rng.integers(8, 60, size=len(landmark))
    with open(path, "w", newline="") as f:
        f.write("id,url,landmark_id\n")
        chunk = 200_000
        for start in range(0, len(landmark), chunk):
            lines = []
            for i in range(start, min(start + chunk, len(landmark))):
                h = f"{ids[i]:016x}"
                scheme = "http" if h[0] < "4" else "https"  # the real file mixes both
                name = f"Photo_{h}_%28{h[3:7]}%29_" + "x" * int(name_len[i]) + ".jpg"
                lines.append(f"{h},{scheme}://upload.wikimedia.org/wikipedia/commons/{h[0]}/{h[:2]}/{name},{landmark[i]}\n")
            f.write("".join(lines))
    return {"rows": int(len(landmark)), "landmarks": int((counts > 0).sum()), "largest": int(counts.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the generated files in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        raw = work / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        shape = write_train_csv(raw / "train.csv")
        (raw / "label_to_category.csv").write_text(
            "landmark_id,category\n"
            + "".join(f"{i},http://commons.wikimedia.org/wiki/Category:Landmark_{i}\n" for i in range(NUM_LANDMARKS))
        )
        size_mb = (raw / "train.csv").stat().st_size / 2**20
        print(f"generated train.csv: {shape['rows']:,} rows, {shape['landmarks']:,} landmarks, "
              f"largest {shape['largest']:,}, {size_mb:.0f} MiB in {time.perf_counter() - t0:.1f} s")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["dataset"] = "gldv2"
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "stages.select_classes", "--raw", "raw",
               "--out-selected", "selected.csv", "--out-classes", "classes.csv"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=work, env=env, check=True)
        seconds = time.perf_counter() - t0
        # Linux reports ru_maxrss in KiB: the largest resident set of any waited-for child.
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        selected = sum(1 for _ in open(work / "selected.csv")) - 1
        classes = sum(1 for _ in open(work / "classes.csv")) - 1
        print(f"select_classes: {seconds:.1f} s, peak RSS {peak_mb:.0f} MiB "
              f"-> {selected:,} rows of {classes:,} classes (min_images_per_class="
              f"{params['gldv2']['min_images_per_class']}, max_images_per_class={params['gldv2']['max_images_per_class']})")
        ok = seconds <= 20 and peak_mb <= 2048
        print("PASS" if ok else "FAIL", "(target: <= 20 s, <= 2048 MiB)")
        if not ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
