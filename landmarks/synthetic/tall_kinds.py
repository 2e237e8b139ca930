"""The landmark kinds that stand taller than wide: towers, a wheel, a statue, a church of domes.

Each draws in its local frame: base centre at (0, 0), y up, height about 1.
"""
from __future__ import annotations

import math

import numpy as np

from landmarks.synthetic.geometry import Pen, Point, arch_pts, dome_pts, ellipse_pts, onion_profile
from landmarks.synthetic.palette import MATERIALS, Look


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
