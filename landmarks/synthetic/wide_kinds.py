"""The landmark kinds that spread wider than tall: arches, pyramids, bridges, temples, a castle.

Each draws in its local frame: base centre at (0, 0), y up, height about 1.
"""
from __future__ import annotations

import numpy as np

from landmarks.synthetic.geometry import Pen, Point, arch_pts, dome_pts, ellipse_pts
from landmarks.synthetic.palette import Look


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
