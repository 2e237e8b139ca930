"""Distractor photos: scenes that show no landmark at all, developed like the landmark photos.

A product that tags landmarks must also say "no landmark"; these scenes (the sky, open country,
streets, vehicles, people, rooms, things on a table) teach and test that. They share the landmark
photos' sky, light, material pool, clutter and camera, so only the landmark is missing.
"""
from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from landmarks.imageio import encode_jpeg
from landmarks.synthetic.closeups import draw_people, draw_vehicles
from landmarks.synthetic.indoor import draw_interior, draw_objects
from landmarks.synthetic.outdoor import draw_sky, draw_street, draw_terrain
from landmarks.synthetic.scene import MIN_IMAGE_SIZE, develop, pick_light, supersampling

# Each draws an S x S picture for a given sky and light tint.
SCENES: dict[str, Callable[[np.random.Generator, int, str, tuple[float, float, float]], Image.Image]] = {
    "sky": draw_sky,
    "terrain": draw_terrain,
    "street": draw_street,
    "vehicles": draw_vehicles,
    "people": draw_people,
    "interior": draw_interior,
    "objects": draw_objects,
}
SCENE_TYPES: tuple[str, ...] = tuple(SCENES)


def render_distractor_scene(scene: str, rng: np.random.Generator, size: int) -> tuple[Image.Image, int]:
    """Render one no-landmark photo of type `scene`; returns the image and the JPEG quality to save it at."""
    ss = supersampling(size)
    sky, tint = pick_light(rng)
    img = SCENES[scene](rng, size * ss, sky, tint)
    return develop(img, rng, ss)


def render_distractor_jpeg(scene: str, rng: np.random.Generator, size: int) -> bytes:
    """Render one no-landmark photo of type `scene` and JPEG-encode it at a random quality (40-95)."""
    if scene not in SCENES:
        raise ValueError(f"distractor scene {scene!r} is unknown; choose one of {', '.join(SCENE_TYPES)}")
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={size} is too small; use at least {MIN_IMAGE_SIZE}")
    img, quality = render_distractor_scene(scene, rng, size)
    return encode_jpeg(img, quality)


def render_distractor(scene: str, rng: np.random.Generator, size: int) -> Image.Image:
    """One size x size RGB no-landmark photo of type `scene`, JPEG artefacts included."""
    return Image.open(io.BytesIO(render_distractor_jpeg(scene, rng, size))).convert("RGB")
