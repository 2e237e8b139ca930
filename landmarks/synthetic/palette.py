"""Colours and light shared by every synthetic photo: the material pool, a photo's Look, colour jitter."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Color = tuple[int, int, int]
Tint = Sequence[float]  # a light's colour, as factors on r, g, b

# One pool for every kind, so that no landmark owns a colour.
MATERIALS: list[Color] = [
    (205, 185, 145),  # sandstone
    (236, 232, 224),  # white marble
    (150, 150, 152),  # grey stone
    (62, 58, 54),  # dark iron
    (118, 84, 52),  # rusty iron
    (165, 72, 52),  # red brick
    (92, 150, 132),  # weathered copper
    (205, 162, 64),  # gilded
    (98, 120, 146),  # blue steel
    (192, 112, 72),  # terracotta
    (38, 38, 44),  # black
    (192, 142, 142),  # pink granite
    (120, 140, 90),  # olive paint
    (230, 210, 120),  # yellow ochre
    (70, 90, 160),  # painted blue
    (175, 60, 70),  # painted red
]


@dataclass
class Look:
    """How one photo colours its landmark: two materials, a light side and the scene's tint."""

    main: Color
    accent: Color
    light: float  # -1..1: which side faces the sun, and how strongly
    tint: tuple[float, float, float]

    def c(self, color: Sequence[float], normal: float = 0.0, k: float = 1.0) -> Color:
        """`color` lit for a face whose normal points left (-1), front (0) or right (+1), times k."""
        f = k * (1.0 + 0.32 * normal * self.light)
        return tuple(int(min(255, max(0, v * f * t))) for v, t in zip(color, self.tint))  # type: ignore[return-value]


def jitter(rng: np.random.Generator, color: Sequence[float], amount: float) -> Color:
    """`color` with every channel moved by up to +-amount, plus an overall brightness change."""
    f = rng.uniform(0.8, 1.2)
    d = rng.uniform(-amount, amount, 3)
    return tuple(int(min(255.0, max(0.0, c * f + e))) for c, e in zip(color, d))  # type: ignore[return-value]


def tinted(color: Sequence[float], tint: Sequence[float], k: float = 1.0) -> Color:
    return tuple(int(min(255.0, max(0.0, c * t * k))) for c, t in zip(color, tint))  # type: ignore[return-value]


def luma(color: Sequence[float]) -> float:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]


def pick_materials(rng: np.random.Generator, sky: Color, tint: Sequence[float]) -> tuple[Color, Color]:
    """Main and accent materials from the shared pool; the main one must stand out against the sky."""
    order = rng.permutation(len(MATERIALS))
    candidates = [jitter(rng, MATERIALS[i], 18) for i in order]
    # A grey tower on a grey sky is invisible even to people; any colour may appear, but not camouflaged.
    contrast = [abs(luma(tinted(c, tint)) - luma(sky)) for c in candidates]
    main = next((i for i, v in enumerate(contrast) if v >= 45), int(np.argmax(contrast)))
    # Stripes, roofs and domes in the accent must be visible against the main material too.
    apart = [abs(luma(c) - luma(candidates[main])) if i != main else -1.0 for i, c in enumerate(candidates)]
    accent = next((i for i, v in enumerate(apart) if v >= 40), int(np.argmax(apart)))
    return candidates[main], candidates[accent]


def scene_look(rng: np.random.Generator, tint: Tint) -> Look:
    """The light of a scene with no landmark: a sunny side and the tint (materials are picked per object)."""
    main, accent = (MATERIALS[i] for i in rng.choice(len(MATERIALS), 2, replace=False))
    return Look(main=main, accent=accent, light=float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)),
                tint=tuple(tint))  # type: ignore[arg-type]


def mix(a: Sequence[float], b: Sequence[float], t: float) -> Color:
    """(1 - t) * a + t * b, as a colour."""
    return tuple(int(min(255.0, max(0.0, x * (1 - t) + y * t))) for x, y in zip(a, b))  # type: ignore[return-value]


def material(rng: np.random.Generator, amount: float = 30) -> Color:
    """A material from the pool, jittered by up to `amount`: how the scenes colour their things."""
    return jitter(rng, MATERIALS[rng.integers(len(MATERIALS))], amount)
