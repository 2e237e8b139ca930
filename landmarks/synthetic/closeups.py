"""Distractor scenes that a close subject fills: vehicles seen from the side, a crowd of people.

Each draws an S x S picture with the landmark photos' own sky, light and material pool.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from landmarks.synthetic.palette import Color, Look, Tint, jitter, material, mix, scene_look
from landmarks.synthetic.scene import SKIES, draw_background, open_outdoor, paint_sky_and_ground

SKINS: list[Color] = [(230, 190, 160), (200, 150, 115), (160, 110, 80), (100, 70, 50)]
HAIR: list[Color] = [(30, 25, 20), (80, 55, 35), (150, 110, 60), (200, 170, 110), (150, 150, 150)]


def draw_vehicle(d: ImageDraw.ImageDraw, rng: np.random.Generator, lk: Look, x0: float, base: float,
                 length: float) -> None:
    """A car, a bus or a van seen from the side, facing left or right, its wheels on `base`."""
    kind = ("car", "car", "bus", "van")[rng.integers(4)]
    flip = rng.random() < 0.5
    L = length

    def X(u: float) -> float:  # u: 0 at the rear, 1 at the front
        return x0 + L * (1 - u if flip else u)

    def box(u0: float, u1: float, y0: float, y1: float, fill: Color, r: float = 0.0) -> None:
        xs = sorted((X(u0), X(u1)))
        d.rounded_rectangle([xs[0], base - y1 * L, xs[1], base - y0 * L], radius=r * L, fill=fill)

    body, dark = lk.c(material(rng)), lk.c((45, 52, 62))
    glass = mix(lk.c(SKIES["day"][1]), dark, rng.uniform(0.4, 0.8))
    if kind == "car":
        box(0.0, 1.0, 0.06, 0.27, body, 0.06)
        cabin = [(X(0.18), base - 0.26 * L), (X(0.3), base - 0.4 * L), (X(0.62), base - 0.4 * L),
                 (X(0.78), base - 0.26 * L)]
        d.polygon(cabin, fill=body)
        d.polygon([(X(0.22), base - 0.27 * L), (X(0.32), base - 0.38 * L), (X(0.47), base - 0.38 * L),
                   (X(0.47), base - 0.27 * L)], fill=glass)
        d.polygon([(X(0.5), base - 0.27 * L), (X(0.5), base - 0.38 * L), (X(0.61), base - 0.38 * L),
                   (X(0.73), base - 0.27 * L)], fill=glass)
        wheels = (0.18, 0.8)
        d.line([(X(0.485), base - 0.26 * L), (X(0.485), base - 0.1 * L)], fill=lk.c(body, 0, 0.7),
               width=max(1, int(L * 0.006)))
    elif kind == "bus":
        box(0.0, 1.0, 0.04, 0.34, body, 0.03)
        for u in np.arange(0.06, 0.9, 0.11):
            box(u, u + 0.09, 0.2, 0.31, glass)
        box(0.9, 0.97, 0.06, 0.31, glass)  # the door
        box(0.0, 1.0, 0.12, 0.15, lk.c(material(rng)))
        wheels = (0.15, 0.82)
    else:
        box(0.0, 0.72, 0.05, 0.42, lk.c(mix(body, (235, 235, 235), 0.6)), 0.01)
        box(0.72, 1.0, 0.05, 0.3, body, 0.03)
        box(0.82, 0.97, 0.18, 0.28, glass)
        wheels = (0.14, 0.84)
    box(0.97, 1.0, 0.15, 0.19, (250, 240, 200))  # head- and tail-lights
    box(0.0, 0.02, 0.15, 0.19, (190, 40, 40))
    r = 0.075 * L
    for u in wheels:
        d.ellipse([X(u) - r, base - 2 * r, X(u) + r, base], fill=(22, 22, 24))
        d.ellipse([X(u) - 0.5 * r, base - 1.5 * r, X(u) + 0.5 * r, base - 0.5 * r], fill=lk.c((170, 170, 175)))


def draw_vehicles(rng: np.random.Generator, S: int, sky: str, tint: Tint) -> Image.Image:
    """One to three vehicles seen up close from the side, on a road or a car park."""
    img, d, horizon = open_outdoor(rng, S, sky, tint, 0.3, 0.6)
    lk = scene_look(rng, tint)
    tarmac = lk.c(jitter(rng, (80, 80, 84), 12))
    top = horizon + (S - horizon) * rng.uniform(0.1, 0.5)
    d.rectangle([0, top, S, S], fill=tarmac)
    d.rectangle([0, top, S, top + S * 0.02], fill=lk.c((160, 155, 150)))  # a kerb
    for base in np.sort(rng.uniform(max(top + 0.1 * S, 0.7 * S), 1.05 * S, int(rng.integers(1, 4)))):
        length = S * rng.uniform(0.75, 1.5) * base / S
        draw_vehicle(d, rng, lk, rng.uniform(-0.3 * length, S - 0.7 * length), base, length)
    return img


def draw_figure(d: ImageDraw.ImageDraw, rng: np.random.Generator, lk: Look, x: float, base: float, h: float) -> None:
    """A person seen from the front, `h` px tall, feet on `base`: legs, body, arms, head, hair, maybe a hat or a bag."""
    cloth, legs = lk.c(material(rng, 45)), lk.c(jitter(rng, [(40, 45, 70), (30, 30, 32), (120, 100, 80)]
                                                        [rng.integers(3)], 20))
    skin, hair = lk.c(jitter(rng, SKINS[rng.integers(len(SKINS))], 12)), lk.c(jitter(rng, HAIR[rng.integers(5)], 10))
    sh, hip, w = base - 0.81 * h, base - 0.47 * h, h * rng.uniform(0.11, 0.14)
    lw = max(1, int(h * 0.06))
    for s in (-1, 1):
        d.line([(x + s * w * 0.45, hip), (x + s * w * rng.uniform(0.3, 0.7), base - 0.02 * h)], fill=legs, width=lw)
        hand = (x + s * w * rng.uniform(1.0, 1.9), base - h * rng.uniform(0.42, 0.52))
        d.line([(x + s * w * 0.9, sh + 0.03 * h), hand], fill=cloth, width=max(1, int(h * 0.05)))
        d.ellipse([hand[0] - 0.025 * h, hand[1] - 0.025 * h, hand[0] + 0.025 * h, hand[1] + 0.025 * h], fill=skin)
    coat = rng.random() < 0.3
    d.polygon([(x - w, sh), (x + w, sh), (x + w * (1.1 if coat else 0.8), base - (0.25 if coat else 0.45) * h),
               (x - w * (1.1 if coat else 0.8), base - (0.25 if coat else 0.45) * h)], fill=cloth)
    d.rectangle([x - 0.025 * h, sh - 0.05 * h, x + 0.025 * h, sh], fill=skin)
    hr = 0.065 * h
    hy = sh - 0.04 * h - hr
    d.ellipse([x - hr * 1.05, hy - hr * 1.15, x + hr * 1.05, hy + hr * 0.3], fill=hair)
    d.ellipse([x - hr * 0.85, hy - hr, x + hr * 0.85, hy + hr], fill=skin)
    if rng.random() < 0.2:  # a hat
        d.rectangle([x - hr * 1.4, hy - hr * 0.75, x + hr * 1.4, hy - hr * 0.55], fill=lk.c(material(rng)))
        d.rectangle([x - hr * 0.9, hy - hr * 1.5, x + hr * 0.9, hy - hr * 0.7], fill=lk.c(material(rng)))
    if rng.random() < 0.3:  # a bag
        xs = sorted(x + rng.choice([-1, 1]) * np.array([w * 1.1, w * 1.1 + 0.12 * h]))
        d.rectangle([xs[0], hip - 0.05 * h, xs[1], hip + 0.08 * h], fill=lk.c(material(rng)))


def draw_people(rng: np.random.Generator, S: int, sky: str, tint: Tint) -> Image.Image:
    """A crowd up close, heads and shoulders cut by the frame, outdoors or against a wall."""
    lk = scene_look(rng, tint)
    horizon = int(S * rng.uniform(0.25, 0.6))
    img, _ = paint_sky_and_ground(rng, S, horizon, sky, tint)
    d = ImageDraw.Draw(img)
    if rng.random() < 0.6:
        draw_background(d, rng, S, horizon, sky)
    else:  # a wall behind them, with shop windows or panels
        wall = lk.c(material(rng, 20))
        d.rectangle([0, 0, S, horizon], fill=wall)
        for x in np.arange(rng.uniform(-0.3, 0) * S, S, S * rng.uniform(0.25, 0.5)):
            d.rectangle([x, horizon * rng.uniform(0.2, 0.4), x + S * 0.18, horizon * 0.95], fill=lk.c(wall, 0, 0.6))
    for h in np.sort(S * rng.uniform(0.3, 1.6, int(rng.integers(3, 13)))):
        base = min(S * 1.6, horizon + h * rng.uniform(0.7, 1.1))
        draw_figure(d, rng, lk, rng.uniform(-0.05, 1.05) * S, base, h)
    return img
