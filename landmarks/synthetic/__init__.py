"""A synthetic landmark dataset, rendered offline, in GLDv2's own formats.

`dataset: synthetic` must run on a fresh machine without internet, so we draw our own "photos" of
landmarks: each kind has a signature structure (a lattice tower, a suspension bridge, a striped
lighthouse...), and every photo varies the viewpoint, scale, position, sky, lighting, colours,
clutter, occlusion, blur and JPEG quality. Colour and position are shared across kinds on purpose,
so the class is only in the shape: a linear model on raw pixels stays far below a small CNN.

The modules, each importing only those above it:
  palette    colours and light: the shared material pool, a photo's Look, jitter and tint
  geometry   the landmark-local frame and per-photo view transform (Pen), outline helpers
  tall_kinds, wide_kinds   one drawing routine per landmark kind
  kinds      KINDS: the classes, their names and extents
  scene      one landmark photo: sky, ground, background, clutter, occluders, camera, JPEG
  outdoor, closeups, indoor   the distractor scenes, which show no landmark
  distractors   the scene types, and one distractor photo developed like a landmark photo
  dataset    ids, per-photo generators, checks, generate_dataset
"""
from landmarks.synthetic.dataset import (
    CATEGORY_PREFIX,
    MAX_DISTRACTOR_FRACTION,
    MAX_LANDMARK_ID,
    category_url,
    check_fraction,
    check_int,
    distractor_id,
    generate_dataset,
    image_id,
    image_rng,
    landmark_ids,
)
from landmarks.synthetic.distractors import SCENE_TYPES, render_distractor, render_distractor_jpeg
from landmarks.synthetic.kinds import KINDS, LANDMARK_NAMES, Kind
from landmarks.synthetic.scene import JPEG_QUALITY_RANGE, MIN_IMAGE_SIZE, render_jpeg, render_landmark

__all__ = [
    "CATEGORY_PREFIX", "JPEG_QUALITY_RANGE", "KINDS", "LANDMARK_NAMES", "MAX_DISTRACTOR_FRACTION",
    "MAX_LANDMARK_ID", "MIN_IMAGE_SIZE", "SCENE_TYPES", "Kind", "category_url", "check_fraction", "check_int",
    "distractor_id", "generate_dataset", "image_id", "image_rng", "landmark_ids", "render_distractor",
    "render_distractor_jpeg", "render_jpeg", "render_landmark",
]
