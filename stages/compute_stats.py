"""Stage compute_stats: per-channel mean and std of the training split, used to normalise inputs."""
from __future__ import annotations

import argparse

from landmarks.data import image_path, read_split
from landmarks.stats import channel_stats
from stages.common import log, stage_params, write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    params = stage_params()

    train = read_split(args.splits, "train")
    paths = [image_path(args.images, lid, iid) for lid, iid in zip(train["landmark_id"], train["id"])]
    stats = channel_stats(paths, image_size=params.compute_stats.image_size)
    write_json(args.out, stats)
    log(f"stats over {stats['num_images']} training images: mean {stats['mean']} std {stats['std']}")


if __name__ == "__main__":
    main()
