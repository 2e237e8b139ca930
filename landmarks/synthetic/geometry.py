"""Drawing in a landmark's own frame: the per-photo view transform (Pen) and outline helpers.

Everything is drawn in a landmark-local frame (x right, y up, base centre at the origin, height
about 1) and mapped through a per-photo view transform (perspective yaw, keystone, shear,
rotation, scale, position), so one drawing routine per kind gives unlimited views.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from landmarks.synthetic.palette import Color

Point = tuple[float, float]


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
