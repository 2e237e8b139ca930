"""Outdoor distractor scenes with no landmark in them: the sky alone, open country, a street.

Each draws an S x S picture with the landmark photos' own sky, light, material pool, background
and foreground clutter, so that what sets a landmark photo apart is the landmark alone.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from landmarks.synthetic.palette import MATERIALS, Color, Tint, jitter, mix, scene_look, tinted
from landmarks.synthetic.scene import (
    SKIES,
    draw_foreground,
    draw_person,
    draw_tree,
    open_outdoor,
    paint_sky_and_ground,
)



def ridge(rng: np.random.Generator, S: int, base: float, amp: float, n: int = 24) -> list[tuple[float, float]]:
    """A smooth random skyline of hills across the frame: `amp` px high at most, standing on `base`."""
    x = np.linspace(-0.05 * S, 1.05 * S, n)
    y = np.zeros(n)
    for _ in range(3):
        y += rng.uniform(0.3, 1.0) * np.sin(x / S * rng.uniform(2, 9) + rng.uniform(0, 2 * np.pi))
    y = (y - y.min()) / max(1e-6, np.ptp(y))
    return [(float(a), float(base - amp * b)) for a, b in zip(x, y)]


def draw_sky(rng: np.random.Generator, S: int, sky: str, tint: Tint) -> Image.Image:
    """A cloudscape: big shaded clouds, the sun or the moon and stars, birds, maybe a contrail and a treeline."""
    horizon = int(S * rng.uniform(0.8, 1.0))
    img, _ = paint_sky_and_ground(rng, S, horizon, sky, tint)
    d = ImageDraw.Draw(img)
    if sky == "night":
        for _ in range(rng.integers(20, 120)):
            d.point((rng.uniform(0, S), rng.uniform(0, horizon)), fill=jitter(rng, (220, 220, 200), 20))
    if rng.random() < 0.5:  # the sun, or the moon at night, in a soft halo
        r = S * rng.uniform(0.03, 0.06)
        x, y = rng.uniform(0.1, 0.9) * S, rng.uniform(0.1, 0.6) * horizon
        sun = jitter(rng, (255, 240, 200) if sky != "night" else (230, 230, 215), 10)
        halo = mix(sun, SKIES[sky][1], 0.6)
        d.ellipse([x - 2.2 * r, y - 2.2 * r, x + 2.2 * r, y + 2.2 * r], fill=halo)
        d.ellipse([x - r, y - r, x + r, y + r], fill=sun)
    white = {"day": (245, 245, 250), "overcast": (190, 192, 198), "sunset": (245, 170, 140),
             "haze": (235, 232, 225), "night": (60, 62, 80)}[sky]
    for _ in range(rng.integers(3, 15)):
        col = jitter(rng, white, 12)
        s = S * rng.uniform(0.05, 0.2)
        cx, cy = rng.uniform(-0.1, 1.1) * S, rng.uniform(0.05, 0.85) * horizon
        puffs = [(cx + rng.uniform(-1.6, 1.6) * s, cy + rng.uniform(-0.3, 0.3) * s, rng.uniform(0.4, 0.9) * s)
                 for _ in range(rng.integers(4, 10))]
        # Shaded underneath, bright on top, like a real cumulus.
        for dy, c in ((0.25, mix(col, (90, 95, 110), 0.35)), (0.0, col), (-0.2, mix(col, (255, 255, 255), 0.4))):
            for px, py, r in puffs:
                rr = r * (0.75 if dy < 0 else 1.0)
                d.ellipse([px - rr, py + dy * s - rr * 0.6, px + rr, py + dy * s + rr * 0.6], fill=c)
    if rng.random() < 0.25:  # a contrail
        y0, y1 = rng.uniform(0, horizon, 2)
        d.line([(0, y0), (S, y1)], fill=mix(white, (255, 255, 255), 0.5), width=max(1, S // 200))
    for _ in range(rng.integers(0, 8) if rng.random() < 0.4 else 0):  # birds
        x, y, w = rng.uniform(0, S), rng.uniform(0.1, 0.8) * horizon, S * rng.uniform(0.008, 0.02)
        d.line([(x - w, y - w * 0.5), (x, y), (x + w, y - w * 0.5)], fill=(30, 30, 35), width=max(1, S // 300))
    if horizon < S:  # the tops of trees or hills along the bottom edge
        dark = tinted(jitter(rng, (40, 55, 40), 15), tint)
        d.polygon(ridge(rng, S, horizon + 2, S * rng.uniform(0.02, 0.1)) + [(S * 1.05, S), (-0.05 * S, S)], fill=dark)
    return img


def draw_terrain(rng: np.random.Generator, S: int, sky: str, tint: Tint) -> Image.Image:
    """Open country: rolling hills, then fields, a lake, a beach or a meadow with trees."""
    img, d, horizon = open_outdoor(rng, S, sky, tint, 0.3, 0.62)
    haze = SKIES[sky][1]
    land = [(80, 120, 55), (110, 130, 60), (140, 125, 80), (95, 100, 70), (60, 90, 50)]
    layers = int(rng.integers(1, 4))
    for i in range(layers):  # far to near: each lower in the frame, less hazy
        col = tinted(mix(haze, jitter(rng, land[rng.integers(len(land))], 20), 0.45 + 0.5 * (i + 1) / layers), tint)
        base = horizon + (S - horizon) * 0.12 * i
        d.polygon(ridge(rng, S, base, S * rng.uniform(0.03, 0.16)) + [(S * 1.05, S), (-0.05 * S, S)], fill=col)
    top = horizon + (S - horizon) * 0.12 * layers
    mode = ("fields", "water", "beach", "meadow")[rng.integers(4)]
    if mode == "fields":  # furrowed strips converging to a far point
        vx = rng.uniform(0.2, 0.8) * S
        f = (top - horizon) / (S - horizon)
        crops = [tinted(jitter(rng, land[rng.integers(len(land))], 30), tint) for _ in range(2)]
        crops.append(tinted(jitter(rng, (190, 170, 90), 25), tint))
        xs = np.sort(rng.uniform(-1.5, 2.5, int(rng.integers(8, 20))) * S)
        for i, (a, b) in enumerate(zip(xs[:-1], xs[1:])):
            d.polygon([(a, S), (b, S), (vx + (b - vx) * f, top), (vx + (a - vx) * f, top)], fill=crops[i % 3])
    elif mode in ("water", "beach"):  # a lake or the sea, with ripples, and a shore
        water = tinted(mix(SKIES[sky][1], jitter(rng, (40, 85, 115), 20), 0.55), tint)
        shore = top + (S - top) * (rng.uniform(0.3, 0.7) if mode == "beach" else rng.uniform(0.6, 1.1))
        d.rectangle([0, top, S, shore], fill=water)
        glint = mix(water, (255, 255, 255), 0.3)
        for _ in range(rng.integers(20, 60)):
            y = rng.uniform(top, min(shore, S))
            w = S * rng.uniform(0.01, 0.06) * (0.3 + (y - top) / S)
            x = rng.uniform(0, S)
            d.line([(x - w, y), (x + w, y)], fill=glint, width=max(1, S // 250))
        if shore < S:
            edge = ridge(rng, S, shore + S * 0.01, S * 0.02)
            sand = tinted(jitter(rng, (215, 195, 150) if mode == "beach" else (100, 120, 70), 20), tint)
            d.polygon(edge + [(S * 1.05, S), (-0.05 * S, S)], fill=sand)
            d.line(edge, fill=tinted((240, 240, 235), tint), width=max(1, S // 120))
            for _ in range(rng.integers(0, 4) if mode == "beach" else 0):  # towels and parasols
                x, y = rng.uniform(0, S), rng.uniform(shore + 0.05 * S, S)
                h = S * 0.15 * (y / S)
                col = tinted(jitter(rng, MATERIALS[rng.integers(len(MATERIALS))], 30), tint)
                d.rectangle([x - h * 0.5, y - h * 0.1, x + h * 0.5, y], fill=col)
                if rng.random() < 0.6:
                    d.line([(x, y), (x, y - h * 1.3)], fill=(60, 60, 60), width=max(1, int(h * 0.05)))
                    d.chord([x - h * 0.8, y - h * 1.6, x + h * 0.8, y - h * 1.0], 180, 360, fill=col)
    else:  # trees dotted over the grass, small and far to big and near
        for y in np.sort(rng.uniform(top, S * 1.05, int(rng.integers(2, 12)))):
            draw_tree(d, rng, rng.uniform(0, S), y, S * 0.3 * (y - horizon) / (S - horizon) + 2, tint)
    if mode != "water":  # the landmark photos' own foreground clutter, around nothing
        base = rng.uniform(max(top, 0.7 * S), S)
        x0 = rng.uniform(0, 0.6) * S
        draw_foreground(d, rng, S, horizon, (x0, base - 0.5 * S, x0 + 0.4 * S, base), tint)
    return img


def draw_street(rng: np.random.Generator, S: int, sky: str, tint: Tint) -> Image.Image:
    """A street in one-point perspective: road, pavements, low houses, lamp posts, cars and buses, people."""
    img, d, horizon = open_outdoor(rng, S, sky, tint, 0.36, 0.55)
    lk = scene_look(rng, tint)
    vx, focal, eye = rng.uniform(0.3, 0.7) * S, rng.uniform(0.5, 0.9) * S, rng.uniform(1.4, 1.8)
    road, walk = rng.uniform(3.0, 6.0), rng.uniform(1.5, 3.0)  # half the road's width, the pavement's: metres

    def at(x: float, y: float, z: float) -> tuple[float, float]:
        """The pixel where the world point (x right, y up, z ahead; metres) lands."""
        return vx + focal * x / z, horizon + focal * (eye - y) / z

    def ground(x0: float, x1: float, z0: float, z1: float, col: Color) -> None:
        d.polygon([at(x0, 0, z0), at(x1, 0, z0), at(x1, 0, z1), at(x0, 0, z1)], fill=col)

    near, far = 0.8 * focal * eye / (S - horizon), 400.0
    for s in (-1, 1):
        ground(s * road, s * (road + walk), near, far, lk.c(jitter(rng, (150, 146, 140), 15)))
    ground(-road, road, near, far, lk.c(jitter(rng, (72, 72, 76), 10)))
    paint = lk.c((225, 225, 215))
    z = near + rng.uniform(0, 3)
    while z < 80:  # the centre line's dashes
        ground(-0.08, 0.08, z, z + 3, paint)
        z += 9

    houses = []
    for s in (-1, 1):
        z = near + rng.uniform(-2, 6)
        while z < 120:
            length, h = rng.uniform(6, 14), rng.uniform(3.5, 9)
            houses.append((z, s, length, h, jitter(rng, MATERIALS[rng.integers(len(MATERIALS))], 25),
                           jitter(rng, [(120, 60, 50), (70, 70, 75), (150, 90, 60)][rng.integers(3)], 15),
                           bool(rng.random() < 0.6), rng.uniform(0.5, 1.0, 12)))
            z += length + (rng.uniform(1, 5) if rng.random() < 0.3 else 0)
    glass = (255, 220, 140) if sky == "night" else mix(SKIES[sky][1], (40, 50, 60), 0.6)
    for z, s, length, h, wall, roof, gable, lit in sorted(houses, key=lambda hs: -hs[0]):
        xi, xo, xm = s * (road + walk), s * (road + walk + 8), s * (road + walk + 4)
        d.polygon([at(xi, 0, z), at(xi, 0, z + length), at(xi, h, z + length), at(xi, h, z)], fill=lk.c(wall, -s))
        d.polygon([at(xi, 0, z), at(xo, 0, z), at(xo, h, z), at(xi, h, z)], fill=lk.c(wall, 0, 0.9))
        for floor in range(int(h // 3)):  # a few windows per floor, and a door
            for j, wz in enumerate(np.arange(z + 1.0, z + length - 1.5, 2.8)):
                y0 = floor * 3 + (0.0 if floor == 0 and j == 0 else 1.0)
                col = lk.c(glass, 0, lit[j % 12]) if floor or j else lk.c(roof, 0, 0.6)
                d.polygon([at(xi, y0, wz), at(xi, y0, wz + 1.2), at(xi, floor * 3 + 2.2, wz + 1.2),
                           at(xi, floor * 3 + 2.2, wz)], fill=col)
        if gable:
            d.polygon([at(xi, h, z), at(xi, h, z + length), at(xm, h + 3, z + length), at(xm, h + 3, z)],
                      fill=lk.c(roof, -s))
            d.polygon([at(xi, h, z), at(xo, h, z), at(xm, h + 3, z)], fill=lk.c(wall, 0, 0.85))

    things = []  # lamp posts, cars, people and trees, drawn far to near
    for s in (-1, 1):
        lamps = np.arange(near + rng.uniform(0, 20), 150, rng.uniform(15, 30))
        things += [(z, "lamp", s * (road + 0.4)) for z in lamps]
        things += [(z, "person", s * (road + rng.uniform(0.3, walk)))
                   for z in rng.uniform(near + 1, 60, rng.integers(0, 6))]
        things += [(z, "tree", s * (road + walk * 0.7)) for z in rng.uniform(near + 3, 90, rng.integers(0, 4))]
    things += [(z, "car", rng.choice([-0.5, 0.5]) * road) for z in rng.uniform(near + 2, 90, rng.integers(0, 6))]
    for z, what, x in sorted(things, key=lambda t: -t[0]):
        scale = focal / z
        bx, by = at(x, 0, z)
        if what == "lamp":
            pole = lk.c((55, 58, 62))
            d.line([(bx, by), at(x, 5, z)], fill=pole, width=max(1, int(0.15 * scale)))
            d.line([at(x, 5, z), at(x - np.sign(x) * 1.2, 5, z)], fill=pole, width=max(1, int(0.1 * scale)))
            lx, ly = at(x - np.sign(x) * 1.2, 4.9, z)
            d.ellipse([lx - 0.3 * scale, ly - 0.12 * scale, lx + 0.3 * scale, ly + 0.12 * scale],
                      fill=(255, 235, 170) if sky == "night" else lk.c((200, 200, 190)))
        elif what == "person":
            draw_person(d, rng, bx, by, 1.7 * scale, tint)
        elif what == "tree":
            draw_tree(d, rng, bx, by, rng.uniform(4, 8) * scale, tint)
        else:  # a car or a bus seen from behind
            bus = rng.random() < 0.2
            w, h = (2.5, 3.2) if bus else (1.8, 1.45)
            col = lk.c(jitter(rng, MATERIALS[rng.integers(len(MATERIALS))], 30))
            d.rectangle([*at(x - w / 2, h, z), *at(x + w / 2, 0.3, z)], fill=col)
            d.rectangle([*at(x - w / 2 + 0.15, h - 0.1, z), *at(x + w / 2 - 0.15, h * (0.72 if bus else 0.62), z)],
                        fill=lk.c((50, 60, 72)))
            for s in (-1, 1):
                d.rectangle([*at(x + s * (w / 2 - 0.15) - 0.15, 0.35, z), *at(x + s * (w / 2 - 0.15) + 0.15, 0, z)],
                            fill=(25, 25, 25))
                d.rectangle([*at(x + s * (w / 2 - 0.25) - 0.15, 0.95, z), *at(x + s * (w / 2 - 0.25) + 0.15, 0.8, z)],
                            fill=(200, 40, 40))
    return img
