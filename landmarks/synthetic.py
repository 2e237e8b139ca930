"""A synthetic landmark dataset, rendered offline, in GLDv2's own formats.

`dataset: synthetic` must run on a fresh machine without internet, so we draw our own "photos" of
landmarks: each kind has a signature structure (a lattice tower, a suspension bridge, a striped
lighthouse...), and every photo varies the viewpoint, scale, position, sky, lighting, colours,
clutter, occlusion, blur and JPEG quality. Colour and position are shared across kinds on purpose,
so the class is only in the shape: a linear model on raw pixels stays far below a small CNN.

Everything is drawn in a landmark-local frame (x right, y up, base centre at the origin, height
about 1) and mapped through a per-photo view transform (perspective yaw, keystone, shear,
rotation, scale, position), so one drawing routine per kind gives unlimited views.
"""
from __future__ import annotations

import hashlib
import io
import math
import multiprocessing
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from landmarks.imageio import atomic_write_bytes, encode_jpeg

Color = tuple[int, int, int]
Point = tuple[float, float]

# GLDv2 landmark ids run from 0 to 203093; ours are drawn from the same range.
MAX_LANDMARK_ID = 203_093
CATEGORY_PREFIX = "http://commons.wikimedia.org/wiki/Category:"
JPEG_QUALITY_RANGE = (40, 95)
MIN_IMAGE_SIZE = 32

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


class Pen:
    """Draws landmark-local shapes through a per-photo view transform onto a PIL image."""

    def __init__(self, img: Image.Image, *, scale: float, origin: Point, half_w: float, height: float,
                 yaw: float, keystone: float, shear: float, angle: float) -> None:
        self.draw = ImageDraw.Draw(img)
        self.scale = scale
        self.ox, self.oy = origin
        self.half_w, self.height = half_w, height
        self.yaw, self.keystone, self.shear = yaw, keystone, shear
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def xy(self, pts: Sequence[Point] | np.ndarray) -> list[Point]:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x, y = p[:, 0], p[:, 1]
        # Looking up at a tall thing makes its verticals converge towards the top.
        x = x * (1.0 - self.keystone * np.clip(y / self.height, 0.0, 1.2))
        # A projective divide: one side is nearer (bigger) than the other, like a photo taken at an angle.
        d = 1.0 + self.yaw * np.clip(x / self.half_w, -1.2, 1.2)
        x, y = x / d, y / d
        x = x + self.shear * y
        xr = x * self.cos - y * self.sin
        yr = x * self.sin + y * self.cos
        return list(zip((self.ox + xr * self.scale).tolist(), (self.oy - yr * self.scale).tolist()))

    def px(self, w: float) -> int:
        return max(1, round(w * self.scale))

    def poly(self, pts: Sequence[Point] | np.ndarray, fill: Color) -> None:
        self.draw.polygon(self.xy(pts), fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Color) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def line(self, pts: Sequence[Point] | np.ndarray, fill: Color, w: float) -> None:
        self.draw.line(self.xy(pts), fill=fill, width=self.px(w))

    def segments(self, segs: Sequence[tuple[Point, Point]], fill: Color, w: float) -> None:
        if not len(segs):
            return
        pts = self.xy(np.asarray(segs, dtype=np.float64).reshape(-1, 2))
        width = self.px(w)
        for a, b in zip(pts[0::2], pts[1::2]):
            self.draw.line([a, b], fill=fill, width=width)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Color, n: int = 28) -> None:
        self.poly(ellipse_pts(cx, cy, rx, ry, n=n), fill)


def ellipse_pts(cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 360.0,
                n: int = 28) -> np.ndarray:
    """Points on an elliptical arc, angles in degrees counter-clockwise from +x (y up)."""
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def arch_pts(x0: float, x1: float, y0: float, spring: float, pointed: bool = False, n: int = 14) -> np.ndarray:
    """An arch-shaped opening: straight jambs from y0 up to `spring`, then a round or pointed top."""
    r = (x1 - x0) / 2
    cx = (x0 + x1) / 2
    if pointed:
        t = np.linspace(0.0, 1.0, n // 2)
        left = np.stack([x0 + r * np.sin(t * np.pi / 2) ** 1.5, spring + 1.4 * r * np.sin(t * np.pi / 2)], 1)
        right = left[::-1].copy()
        right[:, 0] = 2 * cx - right[:, 0]
        top = np.concatenate([left, right])
    else:
        top = ellipse_pts(cx, spring, r, r, 180, 0, n)
    return np.concatenate([[(x0, y0)], top, [(x1, y0)]])


def onion_profile(r: float, h: float, neck: float = 4.0, n: int = 18) -> tuple[np.ndarray, np.ndarray]:
    """Radius and height samples of an onion dome: a narrow neck, a bulge, a pointed top."""
    s = np.linspace(0.0, 1.0, n)
    f = (1 - s) ** 1.6 * (1 + neck * s)
    return r * f / f.max(), h * s


def dome_pts(cx: float, y0: float, r: float, h: float, neck: float = 4.0, u0: float = -1.0,
             u1: float = 1.0) -> np.ndarray:
    """Outline of the vertical slice u0..u1 (fractions of the radius) of an onion dome."""
    rad, ys = onion_profile(r, h, neck)
    up = np.stack([cx + u0 * rad, y0 + ys], 1)
    down = np.stack([cx + u1 * rad, y0 + ys], 1)[::-1]
    return np.concatenate([up, down])


# ---------------------------------------------------------------------------------------------
# The landmark kinds. Each draws in its local frame: base centre at (0, 0), y up, height about 1.
# ---------------------------------------------------------------------------------------------


def draw_lattice_tower(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    top = rng.uniform(0.9, 0.95)
    flare = rng.uniform(2.2, 2.8)
    base = rng.uniform(0.26, 0.32)

    def outer(y: float) -> float:
        return 0.02 + (base - 0.02) * max(0.0, 1 - y / top) ** flare

    col, dark = lk.c(lk.main, 0.3), lk.c(lk.main, -0.3, 0.8)
    w = 0.013
    y1, y2 = rng.uniform(0.15, 0.2), rng.uniform(0.38, 0.46)
    ys = np.linspace(0, top, 26)
    leg = base * rng.uniform(0.42, 0.55)
    arch_h = y1 * rng.uniform(0.75, 0.9)

    def inner(y: float) -> float:
        return leg * math.sqrt(max(0.0, 1 - (y / arch_h) ** 2))

    # Open lattice: only the edges and the bracing are drawn, the sky shows through.
    for s in (-1, 1):
        p.line([(s * outer(y), y) for y in ys], dark if s * lk.light < 0 else col, 2.2 * w)
    p.line(ellipse_pts(0, 0, leg, arch_h, 180, 0, 18), col, 1.8 * w)
    segs: list[tuple[Point, Point]] = []
    for a, b in zip(np.linspace(0, y1, 4)[:-1], np.linspace(0, y1, 4)[1:]):
        for s in (-1, 1):
            segs += [((s * outer(a), a), (s * inner(b), b)), ((s * inner(a), a), (s * outer(b), b))]
    yb = np.linspace(y1, top, rng.integers(11, 16))
    for a, b in zip(yb[:-1], yb[1:]):
        segs += [((-outer(a), a), (outer(b), b)), ((outer(a), a), (-outer(b), b))]
    p.segments(segs, col, w * 0.9)
    for y, t in ((y1, 0.035), (y2, 0.028), (top - 0.06, 0.02)):
        p.rect(-outer(y) - 0.025, y, outer(y) + 0.025, y + t, lk.c(lk.main, 0.0, 0.9))
    p.line([(0, top), (0, 1.0)], col, w)


def draw_triumphal_arch(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    hw, body = rng.uniform(0.42, 0.5), rng.uniform(0.62, 0.72)
    aw, ah = rng.uniform(0.11, 0.15), rng.uniform(0.3, 0.38)
    front, side = lk.c(lk.main), lk.c(lk.main, -0.8, 0.85)
    relief = lk.c(lk.main, 0.0, 0.78)
    # Piers and the span above the opening, so the background shows through the arch.
    p.rect(-hw, 0, -aw, body, front)
    p.rect(aw, 0, hw, body, front)
    span = np.concatenate([ellipse_pts(0, ah, aw, aw, 180, 0, 16), [(aw, body), (-aw, body)]])
    p.poly(span, front)
    depth = rng.uniform(0.05, 0.09) * np.sign(lk.light or 1)
    p.poly([(hw, 0), (hw + depth, 0.02), (hw + depth, body + 0.02), (hw, body)], side)
    p.line(ellipse_pts(0, ah, aw + 0.015, aw + 0.015, 180, 0, 16), relief, 0.012)
    if rng.random() < 0.7:  # side arches as blind reliefs
        for s in (-1, 1):
            x0 = s * (aw + hw) / 2
            p.poly(arch_pts(x0 - 0.05, x0 + 0.05, 0.02, ah * 0.55), relief)
    for s in (-1, 1):  # columns
        for x in (aw + 0.025, hw - 0.03):
            p.rect(s * x - 0.012, 0.02, s * x + 0.012, body - 0.08, lk.c(lk.main, 0.0, 1.08))
    p.rect(-hw - 0.02, body - 0.07, hw + 0.02, body - 0.04, relief)
    attic = rng.uniform(0.14, 0.22)
    p.rect(-hw + 0.02, body, hw - 0.02, body + attic, lk.c(lk.main, 0.0, 0.95))
    p.rect(-hw * 0.7, body + attic * 0.3, hw * 0.7, body + attic * 0.7, relief)
    if rng.random() < 0.5:  # a sculpture group on the attic
        p.poly([(-0.12, body + attic), (-0.08, body + attic + 0.1), (0.0, body + attic + 0.13),
                (0.09, body + attic + 0.08), (0.12, body + attic)], lk.c(lk.accent, 0.0, 0.8))


def draw_pyramid(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    hw = rng.uniform(0.7, 0.8)
    apex_x = rng.uniform(-0.25, 0.25)
    edge = apex_x + rng.uniform(-0.3, 0.3)
    top = rng.uniform(0.8, 0.95)
    left, right = lk.c(lk.main, -1), lk.c(lk.main, 1)
    p.poly([(-hw, 0), (apex_x, top), (edge, -0.02)], left)
    p.poly([(edge, -0.02), (apex_x, top), (hw, 0)], right)
    segs = []
    for t in np.linspace(0.08, 0.92, rng.integers(7, 13)):
        segs.append(((-hw + (apex_x + hw) * t, top * t), (edge + (apex_x - edge) * t, top * t - 0.02 * (1 - t))))
        segs.append(((edge + (apex_x - edge) * t, top * t - 0.02 * (1 - t)), (hw + (apex_x - hw) * t, top * t)))
    p.segments(segs, lk.c(lk.main, 0, 0.8), 0.006)
    if rng.random() < 0.4:  # a lighter capstone
        t = 0.88
        p.poly([(-hw + (apex_x + hw) * t, top * t), (apex_x, top), (hw + (apex_x - hw) * t, top * t)],
               lk.c(lk.accent))


def draw_domed_mausoleum(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    hw, hb = rng.uniform(0.32, 0.38), rng.uniform(0.36, 0.44)
    wall, shadow = lk.c(lk.main), lk.c(lk.main, 0.0, 0.55)
    p.rect(-0.62, 0, 0.62, 0.05, lk.c(lk.main, 0, 0.9))
    p.rect(-hw, 0.05, hw, hb, wall)
    for s in (-1, 1):  # chamfered corners
        p.rect(s * (hw - 0.035), 0.05, s * hw, hb, lk.c(lk.main, s, 0.95))
    p.poly(arch_pts(-0.1, 0.1, 0.05, hb - 0.16, pointed=True), shadow)
    p.rect(-0.14, hb - 0.02, 0.14, hb + 0.04, wall)
    for s in (-1, 1):
        for row in (0.07, 0.2):
            x0 = s * hw * 0.62
            p.poly(arch_pts(x0 - 0.045, x0 + 0.045, row, row + 0.06, pointed=True), shadow)
    r = rng.uniform(0.17, 0.22)
    drum = hb + rng.uniform(0.04, 0.08)
    p.rect(-r * 0.8, hb, r * 0.8, drum, lk.c(lk.main, 0, 0.93))
    dome_c = lk.main if rng.random() < 0.6 else lk.accent
    dh = rng.uniform(0.36, 0.46)
    p.poly(dome_pts(0, drum, r, dh, neck=rng.uniform(2.0, 3.5)), lk.c(dome_c, 0.0))
    p.poly(dome_pts(0, drum, r, dh, neck=2.5, u0=0.2 * np.sign(lk.light or 1), u1=np.sign(lk.light or 1)),
           lk.c(dome_c, 1.0))
    p.line([(0, drum + dh - 0.01), (0, drum + dh + 0.06)], lk.c(lk.accent), 0.012)
    for s in (-1, 1):  # flanking small domes and minarets
        p.poly(dome_pts(s * hw * 0.7, hb, 0.05, 0.1, neck=2.5), lk.c(dome_c, s))
        mx = s * rng.uniform(0.5, 0.58)
        mh = rng.uniform(0.6, 0.75)
        p.poly([(mx - 0.028, 0.05), (mx - 0.02, mh), (mx + 0.02, mh), (mx + 0.028, 0.05)], lk.c(lk.main, s * 0.5))
        for y in np.linspace(0.2, mh, 3):
            p.rect(mx - 0.038, y - 0.012, mx + 0.038, y, lk.c(lk.main, 0, 0.8))
        p.poly(dome_pts(mx, mh, 0.035, 0.07, neck=2.0), lk.c(dome_c, s))


def draw_suspension_bridge(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    span = rng.uniform(0.45, 0.55)
    deck, tower_h = rng.uniform(0.22, 0.3), rng.uniform(0.82, 0.95)
    sag = deck + rng.uniform(0.04, 0.1)
    steel, cable = lk.c(lk.main, 0.2), lk.c(lk.main, 0.0, 0.85)
    p.rect(-1.3, deck - 0.035, 1.3, deck, lk.c(lk.main, -0.3, 0.8))
    p.rect(-1.3, deck, 1.3, deck + 0.015, steel)
    x = np.linspace(-span, span, 25)
    main = np.stack([x, sag + (tower_h - 0.05 - sag) * (x / span) ** 2], 1)
    xs = np.linspace(span, 1.3, 10)
    side = np.stack([xs, tower_h - 0.05 - (tower_h - 0.05 - deck) * ((xs - span) / (1.3 - span)) ** 0.8], 1)
    for curve in (main, side, side * [-1, 1]):
        p.line(curve, cable, 0.012)
    # Vertical suspenders hang from the cables to the deck.
    segs: list[tuple[Point, Point]] = []
    for xi in np.linspace(-span, span, rng.integers(16, 26))[1:-1]:
        segs.append(((xi, deck), (xi, sag + (tower_h - 0.05 - sag) * (xi / span) ** 2)))
    for xi in np.linspace(span, 1.3, 6)[1:-1]:
        yi = float(np.interp(xi, side[:, 0], side[:, 1]))
        segs += [((xi, deck), (xi, yi)), ((-xi, deck), (-xi, yi))]
    p.segments(segs, cable, 0.004)
    for s in (-1, 1):  # H-shaped towers with portal beams
        tx = s * span
        for leg in (-0.035, 0.035):
            p.poly([(tx + leg * 1.3 - 0.012, 0), (tx + leg - 0.01, tower_h), (tx + leg + 0.01, tower_h),
                    (tx + leg * 1.3 + 0.012, 0)], lk.c(lk.main, s * 0.6))
        for y in (deck + 0.02, (deck + tower_h) / 2, tower_h - 0.04):
            p.rect(tx - 0.05, y, tx + 0.05, y + 0.025, steel)
        p.rect(tx - 0.06, -0.02, tx + 0.06, 0.04, lk.c(lk.accent, 0, 0.8))


def draw_obelisk(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    b, t = rng.uniform(0.05, 0.07), rng.uniform(0.03, 0.045)
    top = rng.uniform(0.85, 0.9)
    p.rect(-0.14, 0, 0.14, 0.035, lk.c(lk.accent, 0, 0.9))
    p.rect(-0.1, 0.035, 0.1, 0.08, lk.c(lk.accent))
    edge = rng.uniform(-0.5, 0.5)
    p.poly([(-b, 0.08), (-t, top), (edge * t, top), (edge * b, 0.08)], lk.c(lk.main, -1))
    p.poly([(edge * b, 0.08), (edge * t, top), (t, top), (b, 0.08)], lk.c(lk.main, 1))
    p.poly([(-t, top), (0, 1.0), (t, top)], lk.c(lk.accent if rng.random() < 0.5 else lk.main, 0.5))
    marks = [((0.3 * b * edge, y), (0.3 * b * edge, y + 0.015)) for y in np.linspace(0.15, top - 0.08, 14)]
    p.segments(marks, lk.c(lk.main, 0, 0.6), 0.01)


def draw_lighthouse(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    b, t, top = rng.uniform(0.09, 0.12), rng.uniform(0.055, 0.07), rng.uniform(0.7, 0.76)
    n = int(rng.integers(3, 7))
    a, c = lk.c(lk.main, 0.3), lk.c(lk.accent, 0.3)
    ys = np.linspace(0, top, 2 * n + 1)
    slant = rng.uniform(-0.06, 0.06) if rng.random() < 0.4 else 0.0  # some have spiral stripes
    for i, (y0, y1) in enumerate(zip(ys[:-1], ys[1:])):
        w0, w1 = b + (t - b) * y0 / top, b + (t - b) * y1 / top
        p.poly([(-w0, y0 - slant), (-w1, y1 - slant), (w1, y1 + slant), (w0, y0 + slant)], a if i % 2 else c)
    shade_side = -np.sign(lk.light or 1)
    p.poly([(shade_side * b, 0), (shade_side * t, top), (shade_side * t * 0.4, top), (shade_side * b * 0.4, 0)],
           lk.c((90, 90, 100), 0, 0.6))
    p.rect(-t - 0.03, top, t + 0.03, top + 0.02, lk.c((60, 60, 60)))
    p.segments([((x, top + 0.02), (x, top + 0.05)) for x in np.linspace(-t - 0.025, t + 0.025, 6)],
               lk.c((60, 60, 60)), 0.005)
    glow = (255, 236, 150) if rng.random() < 0.5 else (70, 90, 110)
    p.rect(-t * 0.75, top + 0.02, t * 0.75, top + 0.11, glow)
    p.segments([((x, top + 0.02), (x, top + 0.11)) for x in np.linspace(-t * 0.75, t * 0.75, 4)],
               (40, 40, 40), 0.006)
    p.poly(dome_pts(0, top + 0.11, t * 0.85, 0.07, neck=0.5), lk.c(lk.accent, 0, 0.8))
    p.line([(0, top + 0.17), (0, top + 0.21)], (40, 40, 40), 0.008)
    if rng.random() < 0.5:  # the keeper's house
        s = rng.choice([-1, 1])
        p.rect(s * b, 0, s * (b + 0.14), 0.08, lk.c(lk.accent, s, 0.9))
        p.poly([(s * b, 0.08), (s * (b + 0.07), 0.13), (s * (b + 0.15), 0.08)], lk.c(lk.main, 0, 0.6))


def draw_pagoda(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    n = int(rng.integers(3, 7))
    w0, w1 = rng.uniform(0.2, 0.26), rng.uniform(0.08, 0.12)
    hs = 0.82 / n
    wall, roof = lk.c(lk.main), lk.c(lk.accent, 0.0, 0.85)
    under = lk.c(lk.accent, 0.0, 0.55)
    p.rect(-w0 - 0.05, 0, w0 + 0.05, 0.03, lk.c(lk.main, 0, 0.8))
    y = 0.03
    for i in range(n):
        w = w0 + (w1 - w0) * i / max(1, n - 1)
        p.rect(-w, y, w, y + hs * 0.6, wall)
        p.rect(-w * 0.3, y, w * 0.3, y + hs * 0.45, lk.c(lk.main, 0, 0.5))
        ry = y + hs * 0.6
        e = w + rng.uniform(0.1, 0.14)
        # Roof with upturned eaves.
        p.poly([(-e - 0.03, ry + 0.04), (-e, ry), (-w * 0.9, ry - 0.015), (w * 0.9, ry - 0.015), (e, ry),
                (e + 0.03, ry + 0.04)], under)
        p.poly([(-e - 0.03, ry + 0.04), (-e * 0.75, ry + 0.025), (-w * 0.7, ry + hs * 0.4),
                (w * 0.7, ry + hs * 0.4), (e * 0.75, ry + 0.025), (e + 0.03, ry + 0.04), (e, ry), (-e, ry)], roof)
        y += hs
    p.line([(0, y), (0, y + 0.15)], lk.c(lk.accent, 0, 0.7), 0.012)
    p.segments([((-0.025, yy), (0.025, yy)) for yy in np.linspace(y + 0.02, y + 0.12, 5)],
               lk.c(lk.accent, 0, 0.7), 0.008)


def draw_windmill(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    b, t, h = rng.uniform(0.12, 0.16), rng.uniform(0.07, 0.09), rng.uniform(0.52, 0.6)
    p.poly([(-b, 0), (-t, h), (0, h), (0, 0)], lk.c(lk.main, -1))
    p.poly([(0, 0), (0, h), (t, h), (b, 0)], lk.c(lk.main, 1))
    p.poly(arch_pts(-0.035, 0.035, 0, 0.06), lk.c(lk.main, 0, 0.4))
    p.rect(-0.02, h * 0.55, 0.02, h * 0.55 + 0.04, lk.c(lk.main, 0, 0.4))
    p.poly(dome_pts(0, h, t + 0.025, 0.1, neck=0.3), lk.c(lk.accent))
    hub = (rng.uniform(-0.02, 0.02), h + 0.05)
    phi = rng.uniform(0, np.pi / 2)
    length = rng.uniform(0.38, 0.44)
    frame = lk.c(lk.accent, 0, 0.7) if rng.random() < 0.5 else lk.c((70, 55, 40))
    # Most sails carry cloth; bare lattice sails are thin and easy to lose against the sky.
    cloth = lk.c((225, 220, 205), 0, 0.9) if rng.random() < 0.5 else lk.c(lk.accent)
    bare = rng.random() < 0.15
    sw = rng.uniform(0.08, 0.1)
    for k in range(4):
        a = phi + k * np.pi / 2
        d, nrm = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        c0 = np.array(hub) + d * 0.07
        c1 = np.array(hub) + d * length
        if not bare:
            p.poly([c0, c1, c1 + nrm * sw, c0 + nrm * sw], cloth)
        segs = [(tuple(c0 + nrm * sw * f), tuple(c1 + nrm * sw * f)) for f in (0.0, 1.0)]
        segs += [(tuple(c0 + d * s * (length - 0.07)), tuple(c0 + d * s * (length - 0.07) + nrm * sw))
                 for s in np.linspace(0, 1, 7)]
        p.segments(segs, frame, 0.009)
        p.line([hub, tuple(c1)], frame, 0.018)
    p.ellipse(hub[0], hub[1], 0.02, 0.02, frame, n=12)


def draw_colosseum(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    hw = rng.uniform(0.82, 0.92)
    tiers = int(rng.integers(3, 5))
    th = rng.uniform(0.16, 0.2)
    bulge = rng.uniform(0.05, 0.1)
    x = np.linspace(-hw, hw, 40)
    front = -bulge * np.sqrt(np.clip(1 - (x / hw) ** 2, 0, 1))
    total = th * tiers
    # The far side of the ring, seen over the near wall.
    back = np.stack([x * 0.95, total - 0.02 + bulge * 1.2 * np.sqrt(np.clip(1 - (x / hw) ** 2, 0, 1))], 1)
    p.poly(np.concatenate([back, [(hw * 0.95, total * 0.6), (-hw * 0.95, total * 0.6)]]), lk.c(lk.main, 0, 0.7))
    ruin = rng.uniform(-0.2, 0.9) * np.sign(rng.uniform(-1, 1))  # where the outer ring has collapsed
    top = front + np.where(x * np.sign(ruin) > abs(ruin) * hw, total - th * 0.8, total)
    p.poly(np.concatenate([np.stack([x, front], 1), np.stack([x, top], 1)[::-1]]), lk.c(lk.main))
    hole = lk.c(lk.main, 0, 0.35)
    n = int(rng.integers(11, 17))
    theta = np.linspace(-np.pi / 2, np.pi / 2, n + 2)[1:-1]
    for t in range(tiers):
        for th_i in theta:
            cx = hw * np.sin(th_i)
            ww = 0.5 * hw * np.pi / (n + 1) * np.cos(th_i) * 0.55
            y0 = -bulge * np.cos(th_i) + t * th
            if y0 + th > float(np.interp(cx, x, top)) + 1e-6:
                continue
            if t == tiers - 1 and rng.random() < 0.5:
                p.rect(cx - ww * 0.5, y0 + th * 0.35, cx + ww * 0.5, y0 + th * 0.65, hole)
            else:
                p.poly(arch_pts(cx - ww, cx + ww, y0 + th * 0.12, y0 + th * 0.62, n=8), hole)
        p.line(np.stack([x, front + t * th], 1), lk.c(lk.main, 0, 0.8), 0.012)


def draw_castle(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    hw, wh = rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.4)
    wall, dark = lk.c(lk.main), lk.c(lk.main, 0, 0.35)

    def crenels(x0: float, x1: float, y: float, k: float) -> None:
        n = max(3, int((x1 - x0) / 0.05))
        xs = np.linspace(x0, x1, 2 * n + 2)
        for a, b in zip(xs[0::2], xs[1::2]):
            p.rect(a, y, b, y + 0.04, lk.c(lk.main, 0, k))

    p.rect(-hw, 0, hw, wh, wall)
    crenels(-hw, hw, wh, 1.0)
    keep_w, keep_h = rng.uniform(0.14, 0.2), rng.uniform(0.6, 0.75)
    kx = rng.uniform(-0.15, 0.15)
    p.rect(kx - keep_w, 0, kx + keep_w, keep_h, lk.c(lk.main, 0.3))
    crenels(kx - keep_w - 0.01, kx + keep_w + 0.01, keep_h, 1.1)
    for yy in (keep_h * 0.55, keep_h * 0.8):
        p.rect(kx - 0.012, yy, kx + 0.012, yy + 0.06, dark)
    conical = rng.random() < 0.5
    for tx in (-hw, hw) if rng.random() < 0.5 else (-hw, -hw / 3, hw / 3, hw):
        tw, h = rng.uniform(0.07, 0.1), wh + rng.uniform(0.12, 0.25)
        p.rect(tx - tw, 0, tx + tw, h, lk.c(lk.main, np.sign(tx)))
        if conical:
            p.poly([(tx - tw - 0.02, h), (tx, h + rng.uniform(0.15, 0.22)), (tx + tw + 0.02, h)], lk.c(lk.accent))
        else:
            crenels(tx - tw - 0.015, tx + tw + 0.015, h, 1.05)
        p.rect(tx - 0.008, h * 0.6, tx + 0.008, h * 0.6 + 0.05, dark)
    p.poly(arch_pts(-0.07 + kx, 0.07 + kx, 0, 0.1), dark)
    p.segments([((kx + gx, 0), (kx + gx, 0.15)) for gx in np.linspace(-0.05, 0.05, 4)], lk.c((70, 60, 50)), 0.005)


def draw_ferris_wheel(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    r = rng.uniform(0.4, 0.44)
    cy = r + rng.uniform(0.08, 0.12)
    frame = lk.c(lk.main, 0.3)
    n = int(rng.integers(8, 14)) * 2
    for s in (-1, 1):  # A-frame legs
        p.line([(s * r * 0.55, 0), (0, cy)], lk.c(lk.main, s * 0.5, 0.9), 0.025)
    p.line(ellipse_pts(0, cy, r, r, 0, 360, 48), frame, 0.014)
    p.line(ellipse_pts(0, cy, r * 0.93, r * 0.93, 0, 360, 48), frame, 0.007)
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
    p.segments([((0, cy), (r * np.cos(a), cy + r * np.sin(a))) for a in ang], frame, 0.005)
    cabin = lk.c(lk.accent)
    for a in ang[::2]:
        gx, gy = r * np.cos(a), cy + r * np.sin(a)
        p.rect(gx - 0.025, gy - 0.055, gx + 0.025, gy - 0.012, cabin)
    p.ellipse(0, cy, 0.035, 0.035, lk.c(lk.main, 0, 0.7), n=12)
    p.rect(-0.2, 0, 0.2, 0.05, lk.c(lk.accent, 0, 0.7))


def draw_stepped_temple(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    n = int(rng.integers(4, 8))
    w0, w1 = rng.uniform(0.62, 0.7), rng.uniform(0.15, 0.2)
    top = rng.uniform(0.58, 0.68)
    sh = top / n
    for i in range(n):
        w = w0 + (w1 - w0) * i / (n - 1)
        y = i * sh
        p.poly([(-w, y), (-w + 0.03, y + sh), (w - 0.03, y + sh), (w, y)], lk.c(lk.main, 0, 1.0 - 0.04 * (i % 2)))
        p.rect(-w, y + sh - 0.012, w, y + sh, lk.c(lk.main, 0, 0.7))
    sw = rng.uniform(0.08, 0.12)
    p.poly([(-sw * 1.5, 0), (-sw, top), (sw, top), (sw * 1.5, 0)], lk.c(lk.accent, 0, 0.9))
    p.segments([((-sw * (1.5 - 0.5 * y / top), y), (sw * (1.5 - 0.5 * y / top), y))
                for y in np.linspace(0.02, top, 18)], lk.c(lk.accent, 0, 0.6), 0.005)
    th = rng.uniform(0.15, 0.22)
    p.rect(-w1 * 0.8, top, w1 * 0.8, top + th, lk.c(lk.main, 0.3))
    p.rect(-w1 * 0.9, top + th, w1 * 0.9, top + th + 0.04, lk.c(lk.main, 0, 0.8))
    p.poly(arch_pts(-0.04, 0.04, top, top + th * 0.5), lk.c(lk.main, 0, 0.3))


def draw_statue(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    ph = rng.uniform(0.32, 0.4)
    pw = rng.uniform(0.1, 0.13)
    stone = lk.main
    p.rect(-pw - 0.05, 0, pw + 0.05, 0.05, lk.c(stone, 0, 0.9))
    p.rect(-pw, 0.05, pw, ph, lk.c(stone))
    p.rect(-pw - 0.02, ph - 0.03, pw + 0.02, ph, lk.c(stone, 0, 0.85))
    p.rect(-pw * 0.6, ph * 0.45, pw * 0.6, ph * 0.7, lk.c(stone, 0, 0.85))
    # The figure: a robed body, a head, one arm raised with a torch, the other holding a tablet.
    bronze = lk.accent
    b0, b1 = ph, ph + rng.uniform(0.38, 0.44)
    p.poly([(-0.11, b0), (-0.06, b1), (0.06, b1), (0.11, b0)], lk.c(bronze, -0.3))
    p.poly([(0.0, b0), (0.06, b1), (0.11, b0)], lk.c(bronze, 0.8))
    p.ellipse(0, b1 + 0.05, 0.038, 0.048, lk.c(bronze, 0.2), n=14)
    s = rng.choice([-1, 1])
    raise_a = np.radians(rng.uniform(70, 95))
    hand = (s * (0.05 + 0.18 * np.cos(raise_a)), b1 - 0.01 + 0.18 * np.sin(raise_a))
    p.line([(s * 0.05, b1 - 0.02), hand], lk.c(bronze, 0.3), 0.032)
    p.poly([(hand[0] - 0.022, hand[1]), (hand[0], hand[1] + 0.07), (hand[0] + 0.022, hand[1])],
           lk.c((240, 190, 80)))
    p.rect(-s * 0.11, b1 - 0.16, -s * 0.04, b1 - 0.07, lk.c(bronze, -0.5, 0.85))
    if rng.random() < 0.6:  # crown spikes
        p.segments([((0, b1 + 0.06), (0.06 * np.cos(a), b1 + 0.06 + 0.06 * np.sin(a)))
                    for a in np.radians([20, 55, 90, 125, 160])], lk.c(bronze), 0.008)


def draw_skyscraper(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    k = int(rng.integers(2, 5))
    ws = np.sort(rng.uniform(0.07, 0.19, k))[::-1]
    ys = np.concatenate([[0], np.sort(rng.uniform(0.35, 0.85, k - 1)), [rng.uniform(0.85, 0.9)]])
    edge = rng.uniform(-0.4, 0.4)
    lit = lk.c((255, 220, 140)) if lk.tint[2] < 0.6 else lk.c(lk.accent, 0, 1.1)
    for w, y0, y1 in zip(ws, ys[:-1], ys[1:]):
        p.poly([(-w, y0), (-w, y1), (edge * w, y1), (edge * w, y0)], lk.c(lk.main, -1))
        p.poly([(edge * w, y0), (edge * w, y1), (w, y1), (w, y0)], lk.c(lk.main, 1))
        # A regular window grid is this kind's texture.
        cols = max(2, int(2 * w / 0.03))
        rows = max(2, int((y1 - y0) / 0.03))
        segs = [((x, y0 + 0.01), (x, y1 - 0.01)) for x in np.linspace(-w + 0.012, w - 0.012, cols)]
        p.segments(segs, lit, 0.006)
        p.segments([((-w, y), (w, y)) for y in np.linspace(y0 + 0.02, y1 - 0.01, rows)],
                   lk.c(lk.main, 0, 0.6), 0.004)
        p.rect(-w - 0.005, y1 - 0.01, w + 0.005, y1, lk.c(lk.main, 0, 0.75))
    p.line([(0, ys[-1]), (0, 1.0)], lk.c(lk.main, 0, 0.8), 0.01)


def draw_onion_church(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    p.rect(-0.42, 0, 0.42, rng.uniform(0.22, 0.3), lk.c(lk.main))
    for x in np.linspace(-0.35, 0.35, 6):
        p.poly(arch_pts(x - 0.025, x + 0.025, 0.05, 0.13), lk.c(lk.main, 0, 0.5))
    towers = [(0.0, rng.uniform(0.58, 0.66), 0.12)]
    for s in (-1, 1):
        towers.append((s * rng.uniform(0.22, 0.3), rng.uniform(0.38, 0.5), rng.uniform(0.08, 0.1)))
    if rng.random() < 0.5:
        towers += [(s * rng.uniform(0.1, 0.14), rng.uniform(0.45, 0.52), 0.07) for s in (-1, 1)]
    pattern = rng.integers(0, 3)
    colors = [lk.accent, lk.main, tuple(int(v) for v in MATERIALS[rng.integers(len(MATERIALS))])]
    for i, (x, h, r) in enumerate(sorted(towers, key=lambda t: -t[1])):
        p.rect(x - r * 0.75, 0.1, x + r * 0.75, h, lk.c(lk.main, np.sign(x) * 0.5))
        p.rect(x - r * 0.85, h - 0.03, x + r * 0.85, h, lk.c(lk.main, 0, 0.8))
        dh = r * rng.uniform(2.2, 2.8)
        c0, c1 = colors[i % 3], colors[(i + 1) % 3]
        p.poly(dome_pts(x, h, r, dh), lk.c(c0))
        if pattern == 0:  # vertical stripes
            for u in np.linspace(-1, 1, 7)[:-1][::2]:
                p.poly(dome_pts(x, h, r, dh, u0=u, u1=u + 2 / 6), lk.c(c1))
        elif pattern == 1:  # horizontal zigzag bands
            rad, ys = onion_profile(r, dh)
            for j in range(2, len(ys) - 4, 3):
                zz = [(x + u * rad[j], h + ys[j] + (0.02 if k % 2 else 0)) for k, u in
                      enumerate(np.linspace(-1, 1, 9))]
                p.line(zz, lk.c(c1), 0.012)
        p.line([(x, h + dh), (x, h + dh + 0.06)], lk.c((210, 170, 60)), 0.008)
        p.line([(x - 0.02, h + dh + 0.045), (x + 0.02, h + dh + 0.045)], lk.c((210, 170, 60)), 0.006)


def draw_clock_tower(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    w = rng.uniform(0.08, 0.1)
    body = rng.uniform(0.52, 0.6)
    p.rect(-w, 0, w, body + 0.14, lk.c(lk.main))
    p.segments([((x, 0.02), (x, body - 0.02)) for x in np.linspace(-w * 0.7, w * 0.7, 5)],
               lk.c(lk.main, 0, 0.75), 0.006)
    face_y = body + 0.06
    p.rect(-w - 0.015, body, w + 0.015, body + 0.14, lk.c(lk.main, 0, 1.05))
    p.ellipse(0, face_y, w * 0.8, w * 0.8, lk.c(lk.accent, 0, 0.7), n=24)
    p.ellipse(0, face_y, w * 0.65, w * 0.65, lk.c((235, 230, 210)), n=24)
    h1, h2 = rng.uniform(0, 2 * np.pi, 2)
    p.line([(0, face_y), (0.45 * w * np.cos(h1), face_y + 0.45 * w * np.sin(h1))], (30, 30, 30), 0.008)
    p.line([(0, face_y), (0.6 * w * np.cos(h2), face_y + 0.6 * w * np.sin(h2))], (30, 30, 30), 0.005)
    p.rect(-w, body + 0.14, w, body + 0.22, lk.c(lk.main, 0, 0.9))
    p.segments([((x, body + 0.15), (x, body + 0.21)) for x in np.linspace(-w * 0.6, w * 0.6, 4)],
               lk.c(lk.main, 0, 0.4), 0.012)
    p.poly([(-w - 0.01, body + 0.22), (0, 1.0), (w + 0.01, body + 0.22)], lk.c(lk.accent, -0.5))
    p.poly([(0, body + 0.22), (0, 1.0), (w + 0.01, body + 0.22)], lk.c(lk.accent, 0.6))
    for s in (-1, 1):
        p.poly([(s * w - 0.012, body + 0.22), (s * w, body + 0.3), (s * w + 0.012, body + 0.22)], lk.c(lk.accent))


def draw_greek_temple(p: Pen, rng: np.random.Generator, lk: Look) -> None:
    hw = rng.uniform(0.6, 0.72)
    for i in range(3):
        step = 0.06 - 0.02 * i
        p.rect(-hw - step, 0.025 * i, hw + step, 0.025 * (i + 1), lk.c(lk.main, 0, 1 - 0.05 * i))
    n = int(rng.integers(6, 10))
    ch = rng.uniform(0.38, 0.48)
    cw = hw * 0.9 / n
    broken = rng.random() < 0.3
    for i, x in enumerate(np.linspace(-hw + 0.04, hw - 0.04, n)):
        h = ch if not (broken and rng.random() < 0.3) else ch * rng.uniform(0.3, 0.7)
        p.rect(x - cw * 0.5, 0.075, x + cw * 0.5, 0.075 + h, lk.c(lk.main, 0.5))
        p.rect(x - cw * 0.5, 0.075, x - cw * 0.1, 0.075 + h, lk.c(lk.main, -0.8))
        if h == ch:
            p.rect(x - cw * 0.7, 0.075 + h - 0.02, x + cw * 0.7, 0.075 + h, lk.c(lk.main, 0, 0.9))
    top = 0.075 + ch
    if not broken:
        p.rect(-hw, top, hw, top + 0.08, lk.c(lk.main))
        p.segments([((x, top + 0.04), (x, top + 0.075)) for x in np.linspace(-hw + 0.02, hw - 0.02, 3 * n)],
                   lk.c(lk.main, 0, 0.6), 0.008)
        p.poly([(-hw - 0.02, top + 0.08), (0, top + 0.08 + rng.uniform(0.14, 0.2)), (hw + 0.02, top + 0.08)],
               lk.c(lk.main, 0, 1.05))
        p.poly([(-hw + 0.06, top + 0.095), (0, top + 0.15), (hw - 0.06, top + 0.095)], lk.c(lk.main, 0, 0.8))
    else:
        p.rect(-hw, top, -hw * rng.uniform(-0.2, 0.4), top + 0.08, lk.c(lk.main))


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


# ---------------------------------------------------------------------------------------------
# The scene around the landmark.
# ---------------------------------------------------------------------------------------------

# (zenith, horizon) colours and the tint the light puts on everything else.
SKIES: dict[str, tuple[Color, Color, tuple[float, float, float]]] = {
    "day": ((60, 120, 215), (175, 205, 235), (1.0, 1.0, 1.0)),
    "sunset": ((70, 60, 130), (250, 150, 80), (1.05, 0.8, 0.65)),
    "overcast": ((150, 155, 165), (200, 202, 205), (0.85, 0.87, 0.9)),
    "night": ((8, 10, 30), (40, 40, 70), (0.55, 0.55, 0.7)),
    "haze": ((170, 180, 190), (225, 220, 205), (0.95, 0.93, 0.88)),
}
SKY_WEIGHTS = {"day": 0.35, "sunset": 0.17, "overcast": 0.2, "night": 0.13, "haze": 0.15}
GROUNDS: list[Color] = [(90, 130, 60), (150, 140, 100), (120, 120, 118), (60, 95, 125), (225, 228, 232),
                        (110, 90, 70), (170, 150, 120)]


def jitter(rng: np.random.Generator, color: Sequence[float], amount: float) -> Color:
    """`color` with every channel moved by up to +-amount, plus an overall brightness change."""
    f = rng.uniform(0.8, 1.2)
    d = rng.uniform(-amount, amount, 3)
    return tuple(int(min(255.0, max(0.0, c * f + e))) for c, e in zip(color, d))  # type: ignore[return-value]


def tinted(color: Sequence[float], tint: Sequence[float], k: float = 1.0) -> Color:
    return tuple(int(min(255.0, max(0.0, c * t * k))) for c, t in zip(color, tint))  # type: ignore[return-value]


def paint_sky_and_ground(rng: np.random.Generator, S: int, horizon: int, sky: str,
                         tint: Sequence[float]) -> tuple[Image.Image, Color]:
    """A gradient sky over a plain ground; also returns the sky's mean colour."""
    zen, hor, _ = SKIES[sky]
    zen, hor = jitter(rng, zen, 25), jitter(rng, hor, 25)
    t = (np.linspace(0, 1, max(1, horizon)) ** rng.uniform(0.6, 1.6))[:, None]
    sky_rows = np.asarray(zen)[None] * (1 - t) + np.asarray(hor)[None] * t
    g = np.asarray(tinted(jitter(rng, GROUNDS[rng.integers(len(GROUNDS))], 20), tint), dtype=np.float64)
    t2 = np.linspace(0, 1, S - horizon)[:, None]
    ground_rows = g[None] * (0.85 + 0.3 * t2)
    rows = np.clip(np.concatenate([sky_rows, ground_rows])[:S], 0, 255).astype(np.uint8)
    mean_sky: Color = tuple(int(v) for v in sky_rows.mean(0))  # type: ignore[assignment]
    return Image.fromarray(rows[:, None, :], "RGB").resize((S, S), Image.Resampling.NEAREST), mean_sky


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


def draw_cloud(d: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float, s: float, col: Color) -> None:
    for _ in range(rng.integers(3, 7)):
        dx, dy = rng.uniform(-1.2, 1.2) * s, rng.uniform(-0.3, 0.3) * s
        r = rng.uniform(0.4, 0.8) * s
        d.ellipse([x + dx - r, y + dy - r * 0.6, x + dx + r, y + dy + r * 0.6], fill=col)


def draw_tree(d: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, base: float, h: float,
              tint: Sequence[float]) -> None:
    trunk = tinted(jitter(rng, (90, 65, 40), 15), tint)
    leaf = tinted(jitter(rng, [(50, 110, 45), (80, 130, 50), (150, 120, 40), (40, 80, 50), (170, 80, 40)]
                         [rng.integers(5)], 20), tint)
    d.rectangle([x - h * 0.05, base - h * 0.45, x + h * 0.05, base], fill=trunk)
    if rng.random() < 0.5:  # conifer
        for k in range(3):
            y0 = base - h * (0.25 + 0.25 * k)
            d.polygon([(x - h * (0.3 - 0.07 * k), y0), (x, y0 - h * 0.45), (x + h * (0.3 - 0.07 * k), y0)], fill=leaf)
    else:
        for _ in range(rng.integers(3, 6)):
            cx, cy = x + rng.uniform(-0.2, 0.2) * h, base - h * rng.uniform(0.55, 0.8)
            r = h * rng.uniform(0.18, 0.3)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=leaf)


def draw_person(d: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, base: float, h: float,
                tint: Sequence[float]) -> None:
    cloth = tinted(jitter(rng, MATERIALS[rng.integers(len(MATERIALS))], 40), tint)
    skin = tinted(jitter(rng, [(230, 190, 160), (160, 110, 80), (100, 70, 50)][rng.integers(3)], 15), tint)
    d.rounded_rectangle([x - h * 0.14, base - h * 0.8, x + h * 0.14, base], radius=max(1, h * 0.1), fill=cloth)
    d.ellipse([x - h * 0.1, base - h, x + h * 0.1, base - h * 0.78], fill=skin)


def draw_background_building(d: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, base: float, w: float,
                             h: float, col: Color) -> None:
    """Low, hazy houses and blocks: deliberately not any landmark's signature (no grid, no spire, no dome)."""
    d.rectangle([x, base - h, x + w, base], fill=col)
    if rng.random() < 0.5:
        d.polygon([(x - w * 0.05, base - h), (x + w / 2, base - h - w * 0.35), (x + w * 1.05, base - h)],
                  fill=tuple(int(c * 0.85) for c in col))


def draw_occluder(d: ImageDraw.ImageDraw, rng: np.random.Generator, S: int, box: tuple[float, float, float, float],
                  tint: Sequence[float]) -> None:
    """Something close to the camera that hides part of the landmark."""
    x0, y0, x1, y1 = box
    kind = rng.integers(4)
    if kind == 0:  # a big tree at one side, its crown reaching over the landmark's edge
        side = rng.choice([-1, 1])
        x = (x1 if side > 0 else x0) + side * rng.uniform(0.12, 0.3) * S
        draw_tree(d, rng, x, S * 1.02, S * rng.uniform(0.5, 0.8), tint)
    elif kind == 1:  # a person close to the camera
        draw_person(d, rng, rng.uniform(x0, x1), S * 1.05, S * rng.uniform(0.35, 0.6), tint)
    elif kind == 2:  # a car or a bus
        col = tinted(jitter(rng, MATERIALS[rng.integers(len(MATERIALS))], 30), tint)
        w, h = S * rng.uniform(0.3, 0.6), S * rng.uniform(0.12, 0.22)
        cx, base = rng.uniform(x0, x1), S * rng.uniform(0.95, 1.02)
        d.rounded_rectangle([cx - w / 2, base - h, cx + w / 2, base - h * 0.2], radius=h * 0.2, fill=col)
        d.rectangle([cx - w * 0.35, base - h * 1.3, cx + w * 0.3, base - h], fill=col)
        d.rectangle([cx - w * 0.3, base - h * 1.22, cx + w * 0.25, base - h * 1.02], fill=(60, 70, 80))
        for wx in (cx - w * 0.3, cx + w * 0.3):
            d.ellipse([wx - h * 0.25, base - h * 0.45, wx + h * 0.25, base + h * 0.05], fill=(25, 25, 25))
    else:  # a branch with leaves hanging from the top
        col = tinted(jitter(rng, (50, 100, 40), 25), tint)
        sx = rng.choice([0, S])
        ex, ey = rng.uniform(x0, x1), rng.uniform(y0, (y0 + y1) / 2)
        d.line([(sx, 0), (ex, ey)], fill=tinted((70, 50, 35), tint), width=max(2, S // 60))
        for t in np.linspace(0.3, 1.0, 8):
            lx, ly = sx + (ex - sx) * t, ey * t
            r = S * rng.uniform(0.03, 0.07)
            d.ellipse([lx - r, ly - r, lx + r, ly + r], fill=col)


def render_scene(kind: int, rng: np.random.Generator, size: int) -> tuple[Image.Image, int]:
    """Render one photo of landmark `kind`; returns the image and the JPEG quality to save it at."""
    # Supersampling smooths the polygon edges; 2x is plenty and keeps rendering fast.
    ss = 2 if size <= 320 else 1
    S = size * ss
    k = KINDS[kind]
    sky = str(rng.choice(list(SKY_WEIGHTS), p=list(SKY_WEIGHTS.values())))
    tint = tuple(v * rng.uniform(0.9, 1.1) for v in SKIES[sky][2])
    if sky == "night" and rng.random() < 0.6:  # floodlit at night
        tint = tuple(v * rng.uniform(0.7, 1.0) for v in (1.0, 0.85, 0.6))

    # Where the landmark goes: big or small, left or right, partly out of frame sometimes.
    frac = rng.uniform(0.62, 0.95)
    scale = frac * S / max(k.width / 1.2, k.height)
    w_px, h_px = k.width * scale, k.height * scale
    slack = max(0.04 * S, (S - w_px) / 2)
    cx = S / 2 + rng.uniform(-slack, slack)
    lo = min(h_px + 0.02 * S, 0.97 * S)
    base = rng.uniform(lo, max(lo, 0.97 * S))
    horizon = int(np.clip(base - rng.uniform(0.0, 0.15) * S, 0.3 * S, 0.95 * S))

    img, sky_color = paint_sky_and_ground(rng, S, horizon, sky, tint)
    draw_background(ImageDraw.Draw(img), rng, S, horizon, sky)

    main, accent = pick_materials(rng, sky_color, tint)
    look = Look(main=main, accent=accent,
                light=float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)), tint=tint)  # type: ignore[arg-type]
    pen = Pen(img, scale=scale, origin=(cx, base), half_w=k.width / 2, height=k.height,
              yaw=rng.uniform(-0.25, 0.25), keystone=rng.uniform(-0.05, 0.25) * (k.height > k.width),
              shear=rng.uniform(-0.12, 0.12), angle=np.radians(rng.uniform(-5, 5)))
    k.draw(pen, rng, look)
    draw_foreground(ImageDraw.Draw(img), rng, S, horizon, (cx - w_px / 2, base - h_px, cx + w_px / 2, base), tint)

    if ss > 1:
        img = img.reduce(ss)
    img = camera(img, rng)
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    return img, quality


def draw_background(d: ImageDraw.ImageDraw, rng: np.random.Generator, S: int, horizon: int, sky: str) -> None:
    """Stars or the sun, clouds, and far hills and low buildings along the horizon."""
    if sky == "night":
        for _ in range(rng.integers(0, 40)):
            x, y = rng.uniform(0, S), rng.uniform(0, horizon)
            d.point((x, y), fill=(220, 220, 200))
    elif rng.random() < 0.3:  # the sun or the moon
        r = S * rng.uniform(0.03, 0.07)
        x, y = rng.uniform(0, S), rng.uniform(0, horizon * 0.6)
        d.ellipse([x - r, y - r, x + r, y + r], fill=jitter(rng, (255, 240, 200), 15))
    if sky in ("day", "overcast", "sunset", "haze"):
        cloud = jitter(rng, (235, 235, 240) if sky != "sunset" else (240, 180, 150), 15)
        for _ in range(rng.integers(0, 6)):
            draw_cloud(d, rng, rng.uniform(0, S), rng.uniform(0, horizon * 0.8), S * rng.uniform(0.04, 0.1), cloud)

    # Far things are pale with distance.
    haze = np.asarray(SKIES[sky][1], dtype=np.float64)
    for _ in range(rng.integers(0, 3)):
        hx = rng.uniform(-0.2, 1.2) * S
        hr, hh = S * rng.uniform(0.2, 0.6), S * rng.uniform(0.03, 0.12)
        col = tuple(int(v) for v in 0.6 * haze + 0.4 * np.asarray(jitter(rng, (90, 110, 80), 30)))
        d.chord([hx - hr, horizon - hh, hx + hr, horizon + hh], 180, 360, fill=col)
    for _ in range(rng.integers(0, 9)):
        near = np.asarray(jitter(rng, MATERIALS[rng.integers(len(MATERIALS))], 30))
        col = tuple(int(v) for v in 0.55 * haze + 0.45 * near)
        draw_background_building(d, rng, rng.uniform(-0.1, 1.0) * S, horizon + 1, S * rng.uniform(0.04, 0.14),
                                 S * rng.uniform(0.03, 0.14), col)


def draw_foreground(d: ImageDraw.ImageDraw, rng: np.random.Generator, S: int, horizon: int,
                    box: tuple[float, float, float, float], tint: Sequence[float]) -> None:
    """Trees and people between the camera and the landmark (whose pixel box is `box`), sometimes an occluder."""
    base = box[3]
    for _ in range(rng.integers(0, 3)):
        x = rng.uniform(0, S)
        draw_tree(d, rng, x, rng.uniform(horizon, S), S * rng.uniform(0.08, 0.25), tint)
    for _ in range(rng.integers(0, 6)):
        y = rng.uniform(max(horizon, base - 0.05 * S), S)
        draw_person(d, rng, rng.uniform(0, S), y, S * rng.uniform(0.04, 0.12) * (0.5 + y / S), tint)
    if rng.random() < 0.3:
        draw_occluder(d, rng, S, box, tint)


def camera(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Exposure, contrast, white balance, one side brighter than the other, sensor noise and softness."""
    size = img.size[0]
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, 3)
    curve = (np.arange(256.0) - 128) * rng.uniform(0.7, 1.25) + 128
    side = rng.uniform(-0.3, 0.3)
    # Lookup tables and a composite, not float arrays: this runs for every image and must be cheap.
    dim, bright = (img.point(np.clip(curve[None] * gain[:, None] * f, 0, 255).astype(np.uint8).ravel().tolist())
                   for f in (1 - side, 1 + side))
    ramp = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((size, size))
    img = Image.composite(bright, dim, ramp)
    if rng.random() < 0.6:
        grain = rng.normal(128, rng.uniform(1, 4), (size // 2, size // 2))
        grain_img = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8), "L").resize((size, size))
        img = ImageChops.add(img, Image.merge("RGB", [grain_img] * 3), offset=-128)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 1.0) * size / 256))
    return img


def check_kind_and_size(kind: int, size: int) -> None:
    if not 0 <= kind < len(KINDS):
        raise ValueError(f"landmark kind {kind} is out of range; choose 0..{len(KINDS) - 1}")
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={size} is too small; use at least {MIN_IMAGE_SIZE}")


def render_jpeg(kind: int, rng: np.random.Generator, size: int) -> bytes:
    """Render one photo of landmark `kind` and JPEG-encode it at a random quality (40-95)."""
    check_kind_and_size(kind, size)
    img, quality = render_scene(kind, rng, size)
    return encode_jpeg(img, quality)


def render_landmark(kind: int, rng: np.random.Generator, size: int) -> Image.Image:
    """One size x size RGB photo of landmark `kind`, JPEG artefacts included (what the file decodes to)."""
    return Image.open(io.BytesIO(render_jpeg(kind, rng, size))).convert("RGB")


# ---------------------------------------------------------------------------------------------
# The dataset, in GLDv2's formats.
# ---------------------------------------------------------------------------------------------


def image_rng(seed: int, kind: int, index: int) -> np.random.Generator:
    """Each photo's own generator, so a photo doesn't depend on which others were rendered, or in what order."""
    return np.random.default_rng(np.random.SeedSequence([seed, kind, index]))


def image_id(seed: int, kind: int, index: int) -> str:
    """A GLDv2-style id: 16 lowercase hex digits, fixed by (seed, kind, index)."""
    return hashlib.blake2b(f"synthetic/{seed}/{kind}/{index}".encode(), digest_size=8).hexdigest()


def category_url(name: str) -> str:
    """The Wikimedia Commons category URL GLDv2 gives a landmark (spaces become underscores)."""
    return CATEGORY_PREFIX + quote(name.replace(" ", "_"), safe="_(),'-.!*")


def landmark_ids(seed: int) -> list[int]:
    """GLDv2-like landmark ids for every kind: unique, not contiguous, fixed by the seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D5]))
    return [int(v) + 1 for v in rng.choice(MAX_LANDMARK_ID, size=len(KINDS), replace=False)]


def _render_one(job: tuple[int, int, int, int, str]) -> None:
    seed, kind, index, size, path = job
    atomic_write_bytes(path, render_jpeg(kind, image_rng(seed, kind, index), size))


def check_int(key: str, value: object, lo: int, hi: int | None = None) -> int:
    """`value` as an int if it is a whole number in lo..hi, else a one-line ValueError naming `key`."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < lo or (hi is not None and value > hi):  # type: ignore[operator]
        allowed = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{key}={value!r} is not valid; use {allowed}")
    return int(value)


def generate_dataset(out_dir: Path, *, num_classes: int, images_per_class: int, image_size: int, seed: int,
                     workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Render the synthetic dataset into out_dir/images/<id>.jpg and return GLDv2's two tables.

    Returns (train, categories): train has columns id,url,landmark_id (url is the file:// URL of the
    JPEG), shuffled like GLDv2's train.csv; categories has landmark_id,category as in
    train_label_to_category.csv. The same arguments always give byte-identical files.
    """
    num_classes = check_int("synthetic.num_classes", num_classes, 2, len(KINDS))
    images_per_class = check_int("synthetic.images_per_class", images_per_class, 1)
    image_size = check_int("synthetic.image_size", image_size, MIN_IMAGE_SIZE)
    seed = check_int("seed", seed, 0)
    workers = check_int("workers", workers, 1)

    images = Path(out_dir) / "images"
    images.mkdir(parents=True, exist_ok=True)
    lids = landmark_ids(seed)
    rows, jobs = [], []
    for kind in range(num_classes):
        for index in range(images_per_class):
            path = (images / f"{image_id(seed, kind, index)}.jpg").resolve()
            rows.append((path.stem, path.as_uri(), lids[kind]))
            jobs.append((seed, kind, index, image_size, str(path)))
    if len({r[0] for r in rows}) != len(rows):  # 64-bit hashes: never expected, but ids must be unique
        raise RuntimeError("synthetic image ids collided; use another seed")

    if workers > 1 and len(jobs) > 8:
        with multiprocessing.get_context().Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_one, jobs, chunksize=8):
                pass
    else:
        for job in jobs:
            _render_one(job)

    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5F1])).permutation(len(rows))
    train = pd.DataFrame([rows[i] for i in order], columns=["id", "url", "landmark_id"])
    categories = pd.DataFrame({"landmark_id": lids[:num_classes],
                               "category": [category_url(n) for n in LANDMARK_NAMES[:num_classes]]})
    return train, categories
