"""One photo of a landmark: sky, ground, far background, the landmark, foreground clutter, camera.

Every photo varies the viewpoint, scale, position, sky, lighting, colours, clutter, occlusion,
blur and JPEG quality; the same sky, clutter and camera also make the no-landmark distractors.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from landmarks.imageio import encode_jpeg
from landmarks.synthetic.geometry import Pen
from landmarks.synthetic.kinds import KINDS
from landmarks.synthetic.palette import MATERIALS, Color, Look, jitter, pick_materials, tinted

JPEG_QUALITY_RANGE = (40, 95)
MIN_IMAGE_SIZE = 32

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


def draw_car(d: ImageDraw.ImageDraw, cx: float, base: float, w: float, h: float, col: Color) -> None:
    """A car seen from the side, `w` long and `h` tall (body only), its wheels standing on `base`."""
    d.rounded_rectangle([cx - w / 2, base - h, cx + w / 2, base - h * 0.2], radius=h * 0.2, fill=col)
    d.rectangle([cx - w * 0.35, base - h * 1.3, cx + w * 0.3, base - h], fill=col)
    d.rectangle([cx - w * 0.3, base - h * 1.22, cx + w * 0.25, base - h * 1.02], fill=(60, 70, 80))
    for wx in (cx - w * 0.3, cx + w * 0.3):
        d.ellipse([wx - h * 0.25, base - h * 0.45, wx + h * 0.25, base + h * 0.05], fill=(25, 25, 25))


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
        draw_car(d, cx, base, w, h, col)
    else:  # a branch with leaves hanging from the top
        col = tinted(jitter(rng, (50, 100, 40), 25), tint)
        sx = rng.choice([0, S])
        ex, ey = rng.uniform(x0, x1), rng.uniform(y0, (y0 + y1) / 2)
        d.line([(sx, 0), (ex, ey)], fill=tinted((70, 50, 35), tint), width=max(2, S // 60))
        for t in np.linspace(0.3, 1.0, 8):
            lx, ly = sx + (ex - sx) * t, ey * t
            r = S * rng.uniform(0.03, 0.07)
            d.ellipse([lx - r, ly - r, lx + r, ly + r], fill=col)


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



def open_outdoor(rng: np.random.Generator, S: int, sky: str, tint: Sequence[float], lo: float,
                 hi: float) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """An outdoor scene's start: sky, ground and the far background, its horizon drawn from lo..hi of S."""
    horizon = int(S * rng.uniform(lo, hi))
    img, _ = paint_sky_and_ground(rng, S, horizon, sky, tint)
    d = ImageDraw.Draw(img)
    draw_background(d, rng, S, horizon, sky)
    return img, d, horizon


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


def supersampling(size: int) -> int:
    """How many times bigger than `size` to draw: supersampling smooths the polygon edges; 2x is plenty and fast."""
    return 2 if size <= 320 else 1


def pick_light(rng: np.random.Generator) -> tuple[str, tuple[float, float, float]]:
    """The photo's sky and the tint its light puts on everything."""
    sky = str(rng.choice(list(SKY_WEIGHTS), p=list(SKY_WEIGHTS.values())))
    tint = tuple(v * rng.uniform(0.9, 1.1) for v in SKIES[sky][2])
    if sky == "night" and rng.random() < 0.6:  # floodlit at night
        tint = tuple(v * rng.uniform(0.7, 1.0) for v in (1.0, 0.85, 0.6))
    return sky, tint  # type: ignore[return-value]


def develop(img: Image.Image, rng: np.random.Generator, ss: int) -> tuple[Image.Image, int]:
    """Scale a drawing drawn `ss` times too big down to size, apply the camera; also picks the JPEG quality."""
    if ss > 1:
        img = img.reduce(ss)
    img = camera(img, rng)
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    return img, quality


def render_scene(kind: int, rng: np.random.Generator, size: int) -> tuple[Image.Image, int]:
    """Render one photo of landmark `kind`; returns the image and the JPEG quality to save it at."""
    ss = supersampling(size)
    S = size * ss
    k = KINDS[kind]
    sky, tint = pick_light(rng)

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

    return develop(img, rng, ss)


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
