"""Indoor distractor scenes: a room with its furniture, and things lying on a table.

Each draws an S x S picture with the landmark photos' material pool; the light comes from the
same sky (through the windows by day, from lamps at night).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from landmarks.synthetic.palette import Color, Look, Tint, jitter, material, mix, scene_look
from landmarks.synthetic.scene import SKIES

Point = tuple[float, float]
WALLS: list[Color] = [(235, 230, 215), (220, 210, 190), (200, 215, 220), (225, 200, 180), (190, 200, 170),
                      (165, 72, 52), (240, 240, 240)]
FLOORS: list[Color] = [(150, 105, 65), (190, 150, 100), (110, 75, 50), (200, 200, 195), (90, 90, 95)]
DOORS: list[Color] = [(120, 80, 50), (90, 60, 40), (230, 230, 225), (70, 90, 110)]


def indoor_tint(rng: np.random.Generator, sky: str, tint: Tint) -> Tint:
    """Lamps light a room at night; by day, daylight through the windows, softer than outside."""
    if sky == "night":
        return tuple(v * rng.uniform(0.75, 1.0) for v in (1.0, 0.88, 0.7))
    return tuple(0.4 + 0.6 * v for v in tint)


def draw_window(d: ImageDraw.ImageDraw, rng: np.random.Generator, lk: Look, box: Sequence[float], sky: str) -> None:
    """A window onto the sky (two panes, a frame, sometimes curtains) in the pixel box x0, y0, x1, y1."""
    x0, y0, x1, y1 = box
    zen, hor, _ = SKIES[sky]
    for t in np.linspace(0, 1, 6)[:-1]:
        d.rectangle([x0, y0 + (y1 - y0) * t, x1, y0 + (y1 - y0) * (t + 0.2)], fill=mix(zen, hor, t + 0.1))
    if rng.random() < 0.5:  # treetops or roofs outside
        d.rectangle([x0, y0 + (y1 - y0) * rng.uniform(0.6, 0.9), x1, y1], fill=lk.c(jitter(rng, (70, 100, 60), 30)))
    frame = lk.c((235, 235, 230) if rng.random() < 0.6 else (110, 80, 55))
    w = max(1, int((x1 - x0) * 0.05))
    d.rectangle([x0, y0, x1, y1], outline=frame, width=w)
    d.line([((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1)], fill=frame, width=w)
    if rng.random() < 0.5:
        d.line([(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)], fill=frame, width=w)
    if rng.random() < 0.5:
        cloth = lk.c(material(rng, 30))
        for s in (x0, x1):
            d.rectangle([s - (x1 - x0) * 0.18, y0 - (y1 - y0) * 0.08, s + (x1 - x0) * 0.08, y1 + (y1 - y0) * 0.1],
                        fill=cloth)


def draw_picture(d: ImageDraw.ImageDraw, rng: np.random.Generator, lk: Look, box: Sequence[float]) -> None:
    """A framed picture: stripes and blobs of colour, or a plain landscape of fields under a sky."""
    x0, y0, x1, y1 = box
    d.rectangle([x0, y0, x1, y1], fill=lk.c(jitter(rng, [(40, 35, 30), (190, 160, 90), (240, 240, 235)]
                                                   [rng.integers(3)], 15)))
    m = 0.08 * (x1 - x0)
    x0, y0, x1, y1 = x0 + m, y0 + m, x1 - m, y1 - m
    d.rectangle([x0, y0, x1, y1], fill=lk.c(material(rng, 40)))
    if rng.random() < 0.5:
        d.rectangle([x0, y0 + (y1 - y0) * rng.uniform(0.4, 0.7), x1, y1], fill=lk.c(jitter(rng, (90, 120, 60), 30)))
    for _ in range(rng.integers(1, 5)):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        r = (x1 - x0) * rng.uniform(0.08, 0.25)
        d.ellipse([max(x0, cx - r), max(y0, cy - r), min(x1, cx + r), min(y1, cy + r)], fill=lk.c(material(rng, 40)))


def draw_interior(rng: np.random.Generator, S: int, sky: str, tint: Tint) -> Image.Image:
    """A room in one-point perspective: walls, floor, ceiling, windows, pictures, a door, furniture."""
    lk = scene_look(rng, indoor_tint(rng, sky, tint))
    img = Image.new("RGB", (S, S))
    d = ImageDraw.Draw(img)
    bx0, bx1 = rng.uniform(0.08, 0.35) * S, rng.uniform(0.65, 0.92) * S
    by0, by1 = rng.uniform(0.05, 0.3) * S, rng.uniform(0.55, 0.8) * S
    vp = np.array([rng.uniform(bx0, bx1), rng.uniform(by0, by1)])

    def out(p: Sequence[float], s: float = 30.0) -> Point:
        """The point where the ray from the vanishing point through `p` is `s` times as far: nearer the camera."""
        q = vp + (np.asarray(p, dtype=np.float64) - vp) * s
        return float(q[0]), float(q[1])

    c00, c10, c01, c11 = (bx0, by0), (bx1, by0), (bx0, by1), (bx1, by1)
    wall, floor = jitter(rng, WALLS[rng.integers(len(WALLS))], 12), jitter(rng, FLOORS[rng.integers(len(FLOORS))], 15)
    d.polygon([out(c00), out(c10), c10, c00], fill=lk.c(wall, 0, 1.05))
    d.polygon([out(c00), c00, c01, out(c01)], fill=lk.c(wall, 1))
    d.polygon([c10, out(c10), out(c11), c11], fill=lk.c(wall, -1))
    d.polygon([c01, c11, out(c11), out(c01)], fill=lk.c(floor))
    d.rectangle([bx0, by0, bx1, by1], fill=lk.c(wall, 0, 0.95))
    seam = lk.c(floor, 0, 0.8)
    for u in np.linspace(bx0, bx1, int(rng.integers(4, 14))):  # boards or tiles
        d.line([(u, by1), out((u, by1))], fill=seam, width=max(1, S // 300))
    if rng.random() < 0.5:
        for s in np.geomspace(1.05, 8, int(rng.integers(4, 10))):
            d.line([out(c01, s), out(c11, s)], fill=seam, width=max(1, S // 300))

    bw, bh = bx1 - bx0, by1 - by0
    for _ in range(rng.integers(0, 3)):  # windows on the back wall
        w, h = bw * rng.uniform(0.15, 0.35), bh * rng.uniform(0.35, 0.6)
        x, y = rng.uniform(bx0 + 0.05 * bw, bx1 - w - 0.05 * bw), by0 + bh * rng.uniform(0.1, 0.25)
        draw_window(d, rng, lk, (x, y, x + w, y + h), sky)
    for _ in range(rng.integers(0, 3)):  # pictures
        w = bw * rng.uniform(0.08, 0.22)
        h = w * rng.uniform(0.6, 1.4)
        x, y = rng.uniform(bx0, bx1 - w), by0 + bh * rng.uniform(0.1, 0.35)
        draw_picture(d, rng, lk, (x, y, x + w, y + h))
    if rng.random() < 0.5:  # a door on a side wall
        side = bx0 if rng.random() < 0.5 else bx1
        top, bot, s0 = (side, by0 + 0.25 * bh), (side, by1), rng.uniform(1.2, 1.5)
        door = lk.c(jitter(rng, DOORS[rng.integers(len(DOORS))], 15))
        d.polygon([out(top, s0), out(top, s0 + 0.3), out(bot, s0 + 0.3), out(bot, s0)], fill=door)

    pieces = sorted(rng.uniform(1.0, 2.2, int(rng.integers(2, 6))))
    for s in pieces:  # furniture, far to near
        u = rng.uniform(0.05, 0.95)
        fx, fy = out((bx0 + u * bw, by1), s)
        k = bh * s  # pixels per "wall height" at that depth
        col = lk.c(jitter(rng, [(120, 80, 50), (60, 45, 35), (200, 190, 170), (90, 90, 95)][rng.integers(4)], 15))
        what = ("table", "chair", "sofa", "shelf", "plant", "lamp")[rng.integers(6)]
        if what == "table":
            w = k * rng.uniform(0.3, 0.5)
            d.polygon([(fx - w, fy - 0.3 * k), (fx + w, fy - 0.3 * k), (fx + w * 0.8, fy - 0.36 * k),
                       (fx - w * 0.8, fy - 0.36 * k)], fill=lk.c(col, 0, 1.1))
            for lx in (fx - w * 0.9, fx + w * 0.9):
                d.line([(lx, fy - 0.3 * k), (lx, fy)], fill=col, width=max(1, int(0.025 * k)))
        elif what == "chair":
            w = k * 0.1
            d.rectangle([fx - w, fy - 0.22 * k, fx + w, fy - 0.19 * k], fill=col)
            d.rectangle([fx - w, fy - 0.45 * k, fx - w * 0.7, fy - 0.19 * k], fill=lk.c(col, -1))
            for lx in (fx - w, fx + w * 0.9):
                d.line([(lx, fy - 0.2 * k), (lx, fy)], fill=col, width=max(1, int(0.02 * k)))
        elif what == "sofa":
            w, cloth = k * rng.uniform(0.3, 0.5), lk.c(material(rng, 30))
            d.rounded_rectangle([fx - w, fy - 0.35 * k, fx + w, fy], radius=0.05 * k, fill=lk.c(cloth, 0, 0.85))
            d.rounded_rectangle([fx - w * 0.85, fy - 0.22 * k, fx + w * 0.85, fy - 0.05 * k], radius=0.03 * k,
                                fill=cloth)
        elif what == "shelf":
            w = k * rng.uniform(0.15, 0.3)
            d.rectangle([fx - w, fy - 0.75 * k, fx + w, fy], fill=col)
            for y in np.linspace(fy - 0.7 * k, fy - 0.1 * k, 4):
                x = fx - w * 0.9
                while x < fx + w * 0.85:  # books
                    bwid = k * rng.uniform(0.015, 0.035)
                    d.rectangle([x, y + k * rng.uniform(0.0, 0.05), x + bwid, y + 0.14 * k], fill=lk.c(material(rng)))
                    x += bwid + 1
        elif what == "plant":
            d.polygon([(fx - 0.06 * k, fy - 0.15 * k), (fx + 0.06 * k, fy - 0.15 * k), (fx + 0.045 * k, fy),
                       (fx - 0.045 * k, fy)], fill=lk.c(jitter(rng, (170, 90, 60), 20)))
            leaf = lk.c(jitter(rng, (60, 120, 55), 25))
            for _ in range(rng.integers(4, 9)):
                cx, cy = fx + rng.uniform(-0.12, 0.12) * k, fy - rng.uniform(0.2, 0.5) * k
                r = rng.uniform(0.04, 0.09) * k
                d.ellipse([cx - r, cy - r * 1.6, cx + r, cy + r * 1.6], fill=leaf)
        else:  # a floor lamp
            d.line([(fx, fy), (fx, fy - 0.6 * k)], fill=lk.c((60, 60, 60)), width=max(1, int(0.012 * k)))
            shade = (255, 230, 160) if sky == "night" else lk.c(material(rng, 20))
            d.polygon([(fx - 0.05 * k, fy - 0.72 * k), (fx + 0.05 * k, fy - 0.72 * k), (fx + 0.09 * k, fy - 0.58 * k),
                       (fx - 0.09 * k, fy - 0.58 * k)], fill=shade)
    return img


def draw_objects(rng: np.random.Generator, S: int, sky: str, tint: Tint) -> Image.Image:
    """Things on a table seen from close by: cups, bottles, boxes, fruit, books, plates, pens, a phone."""
    lk = scene_look(rng, indoor_tint(rng, sky, tint))
    edge = rng.uniform(0.1, 0.45) * S
    img = Image.new("RGB", (S, S), lk.c(jitter(rng, WALLS[rng.integers(len(WALLS))], 15)))
    d = ImageDraw.Draw(img)
    top = lk.c(jitter(rng, [(150, 105, 65), (235, 235, 230), (60, 50, 45), (180, 60, 60), (120, 140, 160)]
                      [rng.integers(5)], 15))
    d.rectangle([0, edge, S, S], fill=top)
    d.rectangle([0, edge, S, edge + S * 0.012], fill=lk.c(top, 0, 1.15))
    vx = rng.uniform(0.2, 0.8) * S
    if rng.random() < 0.5:  # wood grain towards a far point above the table
        for x in np.linspace(-S, 2 * S, int(rng.integers(6, 16))):
            d.line([(vx + (x - vx) * 0.4, edge), (x, S)], fill=lk.c(top, 0, 0.88), width=max(1, S // 300))
    shadow = lk.c(top, 0, 0.7)
    for y in np.sort(rng.uniform(edge + 0.08 * S, 1.08 * S, int(rng.integers(5, 14)))):
        x, k = rng.uniform(-0.05, 1.05) * S, S * (0.15 + 0.45 * (y - edge) / (S - edge)) * rng.uniform(0.7, 1.2)
        col = lk.c(material(rng, 35))
        what = ("mug", "bottle", "box", "ball", "book", "plate", "pen", "phone")[rng.integers(8)]
        d.ellipse([x - 0.6 * k, y - 0.12 * k, x + 0.7 * k, y + 0.08 * k], fill=shadow)
        if what == "mug":
            d.arc([x + 0.15 * k, y - 0.75 * k, x + 0.5 * k, y - 0.35 * k], 270, 90, fill=col,
                  width=max(1, int(0.06 * k)))
            d.rectangle([x - 0.3 * k, y - 0.8 * k, x + 0.3 * k, y], fill=col)
            d.ellipse([x - 0.3 * k, y - 0.88 * k, x + 0.3 * k, y - 0.72 * k], fill=lk.c(col, 0, 0.5))
        elif what == "bottle":
            d.rectangle([x - 0.18 * k, y - 0.95 * k, x + 0.18 * k, y], fill=col)
            d.polygon([(x - 0.18 * k, y - 0.95 * k), (x + 0.18 * k, y - 0.95 * k), (x + 0.06 * k, y - 1.2 * k),
                       (x - 0.06 * k, y - 1.2 * k)], fill=col)
            d.rectangle([x - 0.06 * k, y - 1.4 * k, x + 0.06 * k, y - 1.2 * k], fill=lk.c(material(rng)))
            d.rectangle([x - 0.18 * k, y - 0.6 * k, x + 0.18 * k, y - 0.35 * k], fill=lk.c(material(rng)))
        elif what == "box":
            w, h, dp = k * rng.uniform(0.3, 0.6), k * rng.uniform(0.2, 0.6), k * 0.15
            d.rectangle([x - w, y - h, x + w, y], fill=col)
            d.polygon([(x - w, y - h), (x + w, y - h), (x + w + dp, y - h - dp), (x - w + dp, y - h - dp)],
                      fill=lk.c(col, 0, 1.15))
            d.polygon([(x + w, y), (x + w, y - h), (x + w + dp, y - h - dp), (x + w + dp, y - dp)], fill=lk.c(col, 1))
        elif what == "ball":
            r = k * rng.uniform(0.15, 0.3)
            d.ellipse([x - r, y - 2 * r, x + r, y], fill=col)
            d.ellipse([x - 0.6 * r, y - 1.8 * r, x - 0.1 * r, y - 1.3 * r], fill=mix(col, (255, 255, 255), 0.4))
        elif what == "book":
            w, h = k * rng.uniform(0.4, 0.7), k * rng.uniform(0.06, 0.14)
            d.polygon([(x - w, y), (x + w, y), (x + w * 0.8, y - h * 2.5), (x - w * 0.8, y - h * 2.5)],
                      fill=lk.c(col, 0, 1.1))
            d.rectangle([x - w, y, x + w, y + h], fill=lk.c((240, 235, 220)))
        elif what == "plate":
            d.ellipse([x - 0.6 * k, y - 0.25 * k, x + 0.6 * k, y + 0.05 * k], fill=lk.c((238, 238, 235)))
            d.ellipse([x - 0.4 * k, y - 0.18 * k, x + 0.4 * k, y - 0.02 * k], fill=lk.c((215, 215, 212)))
        elif what == "pen":
            a = rng.uniform(-0.4, 0.4)
            dx, dy = 0.5 * k * np.cos(a), 0.5 * k * np.sin(a)
            d.line([(x - dx, y - dy), (x + dx, y + dy)], fill=col, width=max(1, int(0.05 * k)))
        else:
            d.rounded_rectangle([x - 0.4 * k, y - 0.12 * k, x + 0.4 * k, y], radius=0.03 * k, fill=(25, 25, 30))
            d.rounded_rectangle([x - 0.36 * k, y - 0.1 * k, x + 0.36 * k, y - 0.02 * k], radius=0.02 * k,
                                fill=lk.c((60, 80, 110)))
    return img
