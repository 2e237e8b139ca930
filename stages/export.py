"""Stage export: the transfer model as deployable predictor files, one per --out path, the format
following the extension: .pt TorchScript, .pt2 torch.export, .onnx ONNX (landmarks.predictor_file).

Every file is verified before any is written: on up to CHECK_IMAGES test images it must match the
eager model (probabilities and open-set scores) within its tolerance (1e-5; ONNX 1e-4), and it must
load and run in a fresh interpreter that imports only its runtime (torch; onnxruntime for ONNX).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from torchvision.transforms.functional import pil_to_tensor

from landmarks.checkpoint import load_checkpoint
from landmarks.data import image_path, read_split
from landmarks.export import export_predictors
from landmarks.files import sha256_file
from landmarks.imageio import ImageError, decode_image
from landmarks.openset import build_tagger
from landmarks.predictor_file import torchscript_note
from stages.common import log

CHECK_IMAGES = 64


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint to export")
    parser.add_argument("--tagging", required=True, help="tagging.json written by the evaluate stage for this checkpoint")
    parser.add_argument("--splits", required=True, help="folder with test.csv (images used to check the export)")
    parser.add_argument("--images", required=True, help="image root: <images>/<landmark_id>/<id>.jpg")
    parser.add_argument("--out", required=True, nargs="+", help="predictor files to write (.pt, .pt2, .onnx)")
    args = parser.parse_args(argv)

    model, ckpt = load_checkpoint(args.model)
    with open(args.tagging) as f:
        tagging = json.load(f)
    if not {"threshold", "score", "neighbours"} <= set(tagging):
        raise SystemExit(f"error: {args.tagging} lacks the tagging decision; run the evaluate stage first")
    expected = tagging.get("model_sha256")
    if expected and expected != sha256_file(args.model):
        raise SystemExit(f"error: {args.tagging} was computed for another checkpoint than {args.model}; re-run evaluate")

    # Spread the check images over the whole test split (it is ordered by class).
    frame = read_split(args.splits, "test")
    rows = frame.iloc[np.unique(np.linspace(0, len(frame) - 1, num=min(CHECK_IMAGES, len(frame))).astype(int))]
    images, skipped = [], 0
    for lid, iid in zip(rows["landmark_id"], rows["id"]):
        try:
            images.append(pil_to_tensor(decode_image(image_path(args.images, lid, iid))))
        except (ImageError, OSError) as e:
            skipped += 1
            log(f"  skipping unreadable check image {iid}: {e}")
    tagger = build_tagger(model, ckpt, score=tagging["score"], k=tagging["neighbours"])
    reports = export_predictors(tagger, classes=ckpt["classes"], preprocess=ckpt["preprocess"], tagging=tagging,
                                check_images=images, out_paths=args.out)
    runtime = {"onnx": "onnxruntime, no torch"}
    for path, report in reports.items():
        log(f"wrote {path} ({report['format']}): {report['num_classes']} classes, {report['bytes'] / 1e6:.1f} MB; "
            f"max |predictor - model| = {report['max_abs_diff']:.2g} on {report['check_images']} test images"
            f"{f' ({skipped} unreadable skipped)' if skipped else ''}; loads in a fresh process "
            f"({runtime.get(report['format'], 'torch only')})")
        if report["deprecated"]:
            log(f"  note: {torchscript_note(report['deprecated'])}")
    log(f"the predictors tag when the {tagging['score']} score >= {tagging['threshold']:.4f}")


if __name__ == "__main__":
    main()
