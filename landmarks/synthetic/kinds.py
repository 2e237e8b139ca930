"""The landmark kinds (the classes): a name, a drawing routine and the extent used to frame it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from landmarks.synthetic.geometry import Pen
from landmarks.synthetic.palette import Look
from landmarks.synthetic.tall_kinds import (
    draw_clock_tower,
    draw_ferris_wheel,
    draw_lattice_tower,
    draw_lighthouse,
    draw_obelisk,
    draw_onion_church,
    draw_pagoda,
    draw_skyscraper,
    draw_statue,
    draw_windmill,
)
from landmarks.synthetic.wide_kinds import (
    draw_castle,
    draw_colosseum,
    draw_domed_mausoleum,
    draw_greek_temple,
    draw_pyramid,
    draw_stepped_temple,
    draw_suspension_bridge,
    draw_triumphal_arch,
)


@dataclass(frozen=True)
class Kind:
    name: str
    draw: Callable[[Pen, np.random.Generator, Look], None]
    width: float  # local extent, for placing it in the frame
    height: float


KINDS: list[Kind] = [
    Kind("Lattice Tower", draw_lattice_tower, 0.64, 1.0),
    Kind("Triumphal Arch", draw_triumphal_arch, 1.05, 0.95),
    Kind("Great Pyramid", draw_pyramid, 1.6, 0.95),
    Kind("Domed Mausoleum", draw_domed_mausoleum, 1.26, 1.0),
    Kind("Suspension Bridge", draw_suspension_bridge, 2.6, 0.95),
    Kind("Obelisk", draw_obelisk, 0.3, 1.0),
    Kind("Striped Lighthouse", draw_lighthouse, 0.5, 0.97),
    Kind("Pagoda", draw_pagoda, 0.8, 1.0),
    Kind("Windmill", draw_windmill, 0.95, 1.08),
    Kind("Colosseum", draw_colosseum, 1.85, 0.85),
    Kind("Hilltop Castle", draw_castle, 1.5, 0.95),
    Kind("Ferris Wheel", draw_ferris_wheel, 0.9, 1.0),
    Kind("Stepped Temple", draw_stepped_temple, 1.4, 0.95),
    Kind("Statue on Pedestal", draw_statue, 0.45, 1.05),
    Kind("Setback Skyscraper", draw_skyscraper, 0.4, 1.0),
    Kind("Onion Dome Cathedral", draw_onion_church, 0.9, 0.95),
    Kind("Clock Tower", draw_clock_tower, 0.3, 1.0),
    Kind("Greek Temple", draw_greek_temple, 1.55, 0.8),
]
LANDMARK_NAMES: list[str] = [k.name for k in KINDS]
