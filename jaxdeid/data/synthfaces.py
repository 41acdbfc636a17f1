"""SynthFaces: the embedded default data set of procedural faces with real identity structure.

No identity-labelled face data can be downloaded where this project runs, so it renders
its own (issue 2, item 3). Every image is a pure function of ``(seed, identity, sample)``:

* **Identity** (``identity_params``): 46 named parameters (59 numbers) fixed per person, drawn
  only from ``(seed, identity)`` -- face width, height, jaw taper and chin shape, skin
  tone, eye position, spacing, size, openness, tilt and iris colour, brows, nose,
  mouth and lips, ears, hair colour, style, volume, hairline and parting, beard and
  moustache, glasses, moles, blush, neck.
* **Per image** (``image_params``): drawn from ``(seed, identity, sample)`` -- yaw, pitch
  and roll (3-D is approximated by moving each feature by its depth on a head
  ellipsoid and foreshortening it), smile, open mouth, blink, gaze, brow raise,
  directional light, ambient level, colour temperature, exposure, clothing colour, a
  cluttered out-of-focus background, scale and shift jitter, blur and sensor noise.

Shapes are signed-distance functions in *face units* (the aligned crop spans
[-1, 1] x [-1, 1] before jitter); coverage is ``clip(0.5 - sdf / pixel, 0, 1)``, a
one-pixel anti-aliasing ramp at whatever resolution the pixel grid has. All work is
vectorised numpy over the batch; each layer is evaluated only inside the union over
the batch of its bounding box, which keeps small features (eyes, nostrils, moles)
cheap.

Scenes (``render_scenes``) draw the *same* person with the *same* per-image pose,
expression and light into a larger frame at a random place and size. Their box is
the face square: enlarged by ``FACE_BOX_MARGIN`` on every side it is exactly the
framing of ``render_faces`` (before the small per-image jitter), so the crop network
followed by an aligned crop with that margin reproduces what recognizers train on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "FACE_BOX_MARGIN",
    "identity_params",
    "image_params",
    "render",
    "render_faces",
    "render_scenes",
    "scene_boxes",
]

# The face box in face units is [-_BOX_HALF, _BOX_HALF]^2; the render_faces crop is
# that square enlarged by this fraction of its side on every side (matches crop.align_margin).
FACE_BOX_MARGIN = 0.1
_BOX_HALF = 1.0 / (1.0 + 2.0 * FACE_BOX_MARGIN)

# Stream tags keep the random streams for identity, image, noise and scene independent.
_TAG_IDENTITY, _TAG_IMAGE, _TAG_NOISE, _TAG_SCENE = 0x1D, 0x1A, 0x0E, 0x5C
_IDENTITY_DRAWS, _IMAGE_DRAWS = 64, 112
_CLUTTER_SHAPES = 7          # background shapes per image
_FULL_WINDOWS = False        # tests: paint every layer over the whole frame (windows are only a speed-up)

# Palettes (linear-ish sRGB in [0, 1]); identities interpolate inside them so colours are continuous.
_SKIN = np.array([
    [0.96, 0.85, 0.76], [0.94, 0.79, 0.67], [0.90, 0.71, 0.57], [0.80, 0.60, 0.45],
    [0.68, 0.49, 0.35], [0.54, 0.37, 0.26], [0.42, 0.28, 0.20], [0.30, 0.20, 0.15]], np.float32)
_HAIR = np.array([
    [0.07, 0.06, 0.06], [0.16, 0.11, 0.08], [0.30, 0.19, 0.11], [0.45, 0.30, 0.17],
    [0.55, 0.25, 0.11], [0.78, 0.42, 0.18], [0.86, 0.73, 0.46], [0.72, 0.66, 0.54],
    [0.58, 0.57, 0.56], [0.90, 0.89, 0.86], [0.20, 0.25, 0.55], [0.70, 0.25, 0.45]], np.float32)
_HAIR_WEIGHTS = np.array([0.20, 0.17, 0.15, 0.10, 0.06, 0.05, 0.08, 0.05, 0.05, 0.04, 0.025, 0.025])
_IRIS = np.array([
    [0.20, 0.11, 0.05], [0.35, 0.20, 0.09], [0.45, 0.35, 0.15], [0.25, 0.45, 0.25],
    [0.25, 0.45, 0.75], [0.50, 0.58, 0.62]], np.float32)
_FRAMES = np.array([
    [0.05, 0.05, 0.05], [0.35, 0.20, 0.10], [0.75, 0.75, 0.78], [0.80, 0.65, 0.30],
    [0.70, 0.10, 0.12], [0.12, 0.22, 0.60]], np.float32)

# Hair styles. Lengths in face units relative to the face oval (centre fcy, half height ry):
# volume_top/side: hair beyond the oval; hairline: forehead hairline as a fraction of ry
# below the oval top; side_y: where the hair at the sides ends (relative to fcy);
# back_y: where hair behind the head ends (None-like -9: no back hair); curl; bun.
#               name         top   side  hairline side_y back_y curl bun
_HAIR_STYLES = (
    ("bald",       0.00, 0.00, 0.00, 0.02, -9.0, 0.0, 0),
    ("buzz",       0.025, 0.012, 0.30, -0.22, -9.0, 0.0, 0),
    ("short",      0.10, 0.04, 0.28, -0.15, -9.0, 0.0, 0),
    ("side_part",  0.14, 0.06, 0.30, -0.08, -9.0, 0.0, 0),
    ("bob",        0.12, 0.08, 0.48, 0.45, 0.45, 0.0, 0),
    ("long",       0.12, 0.07, 0.30, 1.10, 1.30, 0.0, 0),
    ("curly",      0.26, 0.20, 0.30, 0.30, 0.40, 1.0, 0),
    ("bun",        0.05, 0.03, 0.25, -0.15, -9.0, 0.0, 1),
)
_STYLE_WEIGHTS = np.array([0.07, 0.12, 0.20, 0.16, 0.12, 0.17, 0.09, 0.07])


def _rows(seed: int, tag: int, keys: np.ndarray, draws: int) -> np.ndarray:
    """One row of uniforms per key tuple, from its own generator: independent of batch composition."""
    out = np.empty((len(keys), draws), np.float64)
    for i, key in enumerate(keys):
        out[i] = np.random.default_rng([int(seed) & 0xFFFFFFFF, tag, *map(int, key)]).random(draws)
    return out


def _pick(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Categorical index from a uniform and (unnormalised) weights."""
    cdf = np.cumsum(weights) / np.sum(weights)
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(weights) - 1)


def _lerp_palette(palette: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Continuous colour from a palette at positions t in [0, 1]."""
    x = np.clip(t, 0, 1) * (len(palette) - 1)
    i = np.minimum(x.astype(int), len(palette) - 2)
    f = (x - i)[:, None]
    return (palette[i] * (1 - f) + palette[i + 1] * f).astype(np.float32)


def identity_params(identities: Sequence[int] | np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The parameters that define each person, drawn from ``(seed, identity)`` only.

    Returns a dict of float32 arrays with leading dimension N (colours are [N, 3]).
    Lengths are in face units (the aligned crop spans [-1, 1]).
    """
    ids = np.asarray(identities, np.int64).reshape(-1)
    r = _rows(seed, _TAG_IDENTITY, ids[:, None], _IDENTITY_DRAWS)
    f32 = lambda a: np.asarray(a, np.float32)
    p: dict[str, np.ndarray] = {}
    # Face and jaw.
    p["face_rx"] = f32(0.49 + 0.12 * r[:, 0])                 # half width of the face oval
    p["face_ry"] = f32(0.63 + 0.10 * r[:, 1])                 # half height
    p["jaw_taper"] = f32(0.10 + 0.32 * r[:, 2])               # how much the lower face narrows
    p["chin_power"] = f32(2.0 + 1.1 * r[:, 3])                # 2 = round chin, higher = square jaw
    p["face_cy"] = f32(0.01 + 0.05 * r[:, 4])                 # vertical centre of the oval
    # Skin: tone along the palette plus a small warm/cool shift.
    skin = _lerp_palette(_SKIN, r[:, 5])
    skin *= f32(1 + 0.06 * np.stack([r[:, 6] - 0.5, np.zeros_like(r[:, 6]), 0.5 - r[:, 6]], 1))
    p["skin"] = np.clip(skin, 0, 1)
    p["blush"] = f32(0.25 * r[:, 7] ** 2)                     # cheek redness
    # Eyes.
    p["eye_y"] = f32(-0.12 + 0.10 * r[:, 8])                  # eye line relative to the oval centre
    p["eye_dx"] = f32(0.17 + 0.07 * r[:, 9])                  # half the distance between the eyes
    p["eye_w"] = f32(0.095 + 0.04 * r[:, 10])                # half width of one eye
    p["eye_open"] = f32(0.36 + 0.28 * r[:, 11])               # height / width
    p["eye_tilt"] = f32(-0.15 + 0.30 * r[:, 12])              # radians, outer corner up when positive
    p["iris"] = _IRIS[_pick(r[:, 13], np.array([0.3, 0.25, 0.12, 0.1, 0.15, 0.08]))] * f32(0.85 + 0.3 * r[:, 14])[:, None]
    p["iris_r"] = f32(0.50 + 0.15 * r[:, 15])                 # iris radius / eye half width
    # Brows.
    p["brow_gap"] = f32(0.05 + 0.06 * r[:, 16])               # height above the eye
    p["brow_thick"] = f32(0.014 + 0.022 * r[:, 17])           # half thickness
    p["brow_arch"] = f32(0.00 + 0.05 * r[:, 18])              # arch height
    p["brow_len"] = f32(1.0 + 0.4 * r[:, 19])                 # half length / eye half width
    p["brow_angle"] = f32(-0.25 + 0.45 * r[:, 20])            # radians, outer end up when positive
    # Nose.
    p["nose_len"] = f32(0.14 + 0.10 * r[:, 21])               # eye line to nose tip
    p["nose_w"] = f32(0.055 + 0.05 * r[:, 22])                # half width of the nostrils
    # Mouth and lips.
    p["mouth_gap"] = f32(0.10 + 0.07 * r[:, 23])              # nose tip to mouth line
    p["mouth_w"] = f32(0.12 + 0.07 * r[:, 24])                # half width
    p["lip_up"] = f32(0.018 + 0.022 * r[:, 25])               # upper lip thickness
    p["lip_low"] = f32(0.026 + 0.028 * r[:, 26])               # lower lip thickness
    lip_red = f32(0.35 + 0.5 * r[:, 27])[:, None]
    p["lips"] = np.clip(p["skin"] * (1 - 0.5 * lip_red) * 0.9 + np.array([0.72, 0.22, 0.25], np.float32) * 0.5 * lip_red, 0, 1)
    # Ears.
    p["ear_size"] = f32(0.08 + 0.06 * r[:, 28])
    p["ear_y"] = f32(-0.05 + 0.08 * r[:, 29])
    # Hair.
    style = _pick(r[:, 30], _STYLE_WEIGHTS)
    table = np.array([s[1:] for s in _HAIR_STYLES], np.float32)[style]
    p["hair_style"] = f32(style)
    p["hair"] = _HAIR[_pick(r[:, 31], _HAIR_WEIGHTS)] * f32(0.85 + 0.3 * r[:, 32])[:, None]
    p["hair"] = np.clip(p["hair"], 0, 1)
    p["hair_top"] = table[:, 0] * f32(0.7 + 0.6 * r[:, 33])     # volume above the head
    p["hair_side"] = table[:, 1] * f32(0.7 + 0.6 * r[:, 34])    # volume beside the head
    p["hairline"] = table[:, 2] + f32(0.14 * (r[:, 35] - 0.5))  # forehead hairline, fraction of ry below the top
    p["hair_side_y"] = table[:, 3] + f32(0.16 * (r[:, 36] - 0.5))  # where side hair ends (relative to face_cy)
    p["hair_back_y"] = table[:, 4] + f32(0.3 * (r[:, 36] - 0.5))   # where back hair ends (relative to face_cy)
    p["hair_curl"] = table[:, 5]
    p["hair_bun"] = table[:, 6]
    p["hair_part"] = f32(np.where(r[:, 37] < 0.5, -1, 1) * (0.05 + 0.15 * r[:, 38]))  # parting slope
    # Facial hair: 0 none, 1 stubble, 2 full beard, 3 goatee; moustache independent.
    p["beard"] = f32(_pick(r[:, 39], np.array([0.62, 0.14, 0.14, 0.10])))
    p["moustache"] = f32((r[:, 40] < 0.22) | (p["beard"] == 2) & (r[:, 40] < 0.8))
    # Glasses: 0 none, 1 round, 2 rectangular.
    p["glasses"] = f32(_pick(r[:, 41], np.array([0.70, 0.15, 0.15])))
    p["glasses_frame"] = _FRAMES[_pick(r[:, 42], np.ones(len(_FRAMES)))]
    p["glasses_size"] = f32(1.0 + 0.35 * r[:, 43])
    # Moles: up to two, at fixed places on the face.
    p["moles"] = f32(_pick(r[:, 44], np.array([0.6, 0.28, 0.12])))
    p["mole_xy"] = np.stack([f32(0.7 * (r[:, 45] - 0.5)), f32(0.1 + 0.3 * r[:, 46]),
                             f32(0.7 * (r[:, 47] - 0.5)), f32(-0.3 + 0.25 * r[:, 48])], 1)
    # Neck.
    p["neck_w"] = f32(0.27 + 0.09 * r[:, 49])
    return p


def image_params(identities, samples, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-image nuisance (pose, expression, light, background, camera), from ``(seed, identity, sample)``."""
    ids = np.asarray(identities, np.int64).reshape(-1)
    smp = np.asarray(samples, np.int64).reshape(-1)
    if ids.shape != smp.shape:
        raise ValueError(f"identities {ids.shape} and samples {smp.shape} must have the same length")
    r = _rows(seed, _TAG_IMAGE, np.stack([ids, smp], 1), _IMAGE_DRAWS)
    f32 = lambda a: np.asarray(a, np.float32)
    q: dict[str, np.ndarray] = {}
    q["yaw"] = f32(0.40 * (2 * r[:, 0] - 1))                  # radians, about +-23 degrees
    q["pitch"] = f32(0.22 * (2 * r[:, 1] - 1))
    q["roll"] = f32(0.16 * (2 * r[:, 2] - 1))
    q["smile"] = f32(np.clip(1.3 * r[:, 3] - 0.2, 0, 1))
    q["mouth_open"] = f32(np.where(r[:, 4] < 0.3, r[:, 5], 0.0))
    q["blink"] = f32(np.where(r[:, 6] < 0.12, 0.85 + 0.15 * r[:, 7], 0.25 * r[:, 7] * q["smile"]))
    q["gaze"] = np.stack([f32(0.35 * (2 * r[:, 8] - 1)), f32(0.2 * (2 * r[:, 9] - 1))], 1)
    q["brow_raise"] = f32(0.035 * (2 * r[:, 10] - 1))
    # Light: direction (azimuth, elevation), ambient share, colour temperature, exposure.
    azimuth = 1.3 * (2 * r[:, 11] - 1)
    elevation = 0.2 + 0.7 * r[:, 12]
    q["light"] = np.stack([f32(np.sin(azimuth) * np.cos(elevation)), f32(-np.sin(elevation) * 0.6),
                           f32(np.cos(azimuth) * np.cos(elevation))], 1)
    q["light"] /= np.linalg.norm(q["light"], axis=1, keepdims=True)
    q["ambient"] = f32(0.35 + 0.35 * r[:, 13])
    temp = f32(2 * r[:, 14] - 1)                               # -1 warm tungsten .. +1 cold daylight
    q["tint"] = np.stack([1 - 0.12 * temp, 1 - 0.02 * np.abs(temp), 1 + 0.12 * temp], 1).astype(np.float32)
    q["exposure"] = f32(0.78 + 0.32 * r[:, 15])
    # Clothing colour (a nuisance, deliberately not part of identity).
    q["cloth"] = f32(np.stack([r[:, 16], r[:, 17], r[:, 18]], 1) * 0.8 + 0.1)
    # Camera: scale and shift jitter of the face inside the aligned crop; blur and sensor noise.
    q["scale"] = f32(1.0 + 0.16 * (r[:, 19] - 0.5))
    q["shift"] = np.stack([f32(0.10 * (2 * r[:, 20] - 1)), f32(0.08 * (2 * r[:, 21] - 1))], 1)
    q["blur"] = f32(np.where(r[:, 22] < 0.5, 1.1 * r[:, 23], 0.0))   # sigma in pixels at 64 px
    q["noise"] = f32(0.035 * r[:, 24] ** 1.5)
    # Background: two-colour gradient plus clutter shapes (x, y, size, aspect, angle, r, g, b, kind, alpha).
    q["bg_a"] = _muted(r[:, 25:28])
    q["bg_b"] = _muted(r[:, 28:31])
    q["bg_angle"] = f32(2 * np.pi * r[:, 31])
    q["clutter"] = f32(r[:, 32:32 + 10 * _CLUTTER_SHAPES].reshape(-1, _CLUTTER_SHAPES, 10))
    return q


# ----------------------------------------------------------------------------- geometry helpers

def _coverage(sdf, px, soft=0.0):
    """Anti-aliased coverage: a ramp one pixel wide (plus `soft` face units for soft edges)."""
    return np.clip(0.5 - sdf / (px + soft), 0.0, 1.0)


def _ellipse_sdf(x, y, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (first-order: value / gradient)."""
    kx, ky = x / rx, y / ry
    k0 = np.sqrt(kx * kx + ky * ky)
    k1 = np.sqrt((kx / rx) ** 2 + (ky / ry) ** 2) + 1e-6
    return (k0 - 1.0) * k0 / k1


def _segment_sdf(x, y, ax, ay, bx, by, radius):
    """Distance to the segment a-b minus `radius` (a capsule)."""
    px_, py_ = x - ax, y - ay
    dx, dy = bx - ax, by - ay
    t = np.clip((px_ * dx + py_ * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    ex, ey = px_ - t * dx, py_ - t * dy
    return np.sqrt(ex * ex + ey * ey) - radius


def _rounded_box_sdf(x, y, hx, hy, radius):
    qx = np.abs(x) - hx + radius
    qy = np.abs(y) - hy + radius
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - radius


def _c(a):
    """[N] -> [N, 1, 1] for broadcasting against [N, H, W] grids."""
    return np.asarray(a, np.float32)[:, None, None]


class _Canvas:
    """A planar RGB canvas [3, N, H, W] with the face-coordinate grid and windowed painting.

    Planar, because numpy is slow when the innermost axis has length 3.
    """

    def __init__(self, inv, centre, height, width):
        # face = inv @ (frame - centre); frame spans [-1, 1] over the canvas.
        n = inv.shape[0]
        self.n, self.h, self.w = n, height, width
        ys = ((np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1)
        xs = ((np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1)
        fx = xs[None, None, :] - _c(centre[:, 0])
        fy = ys[None, :, None] - _c(centre[:, 1])
        self.u = _c(inv[:, 0, 0]) * fx + _c(inv[:, 0, 1]) * fy
        self.v = _c(inv[:, 1, 0]) * fx + _c(inv[:, 1, 1]) * fy
        self.frame_x, self.frame_y = xs, ys
        self.inv = inv
        self.fwd = np.linalg.inv(inv)                     # frame offset = fwd @ face
        self.centre = centre
        # Face units per pixel (the transform is a similarity, so one number per image).
        self.px = (2.0 / width) * np.sqrt(np.abs(np.linalg.det(inv))).astype(np.float32)
        self.pxc = _c(self.px)
        self.img = np.zeros((3, n, height, width), np.float32)
        self.head = np.zeros((n, height, width), np.float32)   # where the head lighting applies

    def window(self, cx, cy, hx, hy):
        """Pixel slices covering, for every image, the face-unit box centre (cx, cy) +- (hx, hy).

        Only a speed-up: the boxes must be conservative, which a test checks by rendering
        again with `_FULL_WINDOWS` set and comparing bytes.
        """
        if _FULL_WINDOWS:
            return (slice(None), slice(0, self.h), slice(0, self.w))
        cx, cy = np.broadcast_to(cx, (self.n,)), np.broadcast_to(cy, (self.n,))
        hx, hy = np.broadcast_to(hx, (self.n,)), np.broadcast_to(hy, (self.n,))
        f = self.fwd
        mx = self.centre[:, 0] + f[:, 0, 0] * cx + f[:, 0, 1] * cy
        my = self.centre[:, 1] + f[:, 1, 0] * cx + f[:, 1, 1] * cy
        ex = np.abs(f[:, 0, 0]) * hx + np.abs(f[:, 0, 1]) * hy
        ey = np.abs(f[:, 1, 0]) * hx + np.abs(f[:, 1, 1]) * hy
        x0 = int(np.floor(((mx - ex).min() + 1) / 2 * self.w)) - 2
        x1 = int(np.ceil(((mx + ex).max() + 1) / 2 * self.w)) + 2
        y0 = int(np.floor(((my - ey).min() + 1) / 2 * self.h)) - 2
        y1 = int(np.ceil(((my + ey).max() + 1) / 2 * self.h)) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.w), min(y1, self.h)
        if x1 <= x0 or y1 <= y0:
            return None
        return (slice(None), slice(y0, y1), slice(x0, x1))

    def paint(self, win, alpha, colour, head=False):
        """Alpha-composites `colour` ([N, 3], [1, 3] or planar [3, N, h, w]) over the window."""
        if win is None:
            return
        region = self.img[(slice(None),) + win]
        if np.ndim(colour) == 2:
            colour = np.asarray(colour, np.float32).T[:, :, None, None]
        # region = region * (1 - alpha) + colour * alpha, in place.
        region *= (1.0 - alpha)[None]
        region += alpha[None] * colour
        if head:
            h = self.head[win]
            np.maximum(h, alpha, out=h)


# ----------------------------------------------------------------------------- drawing

def _interp_matrix(out_len: int, in_len: int) -> np.ndarray:
    """[out_len, in_len] linear interpolation weights (pixel-centre aligned, edge-clamped)."""
    pos = np.clip((np.arange(out_len) + 0.5) * in_len / out_len - 0.5, 0, in_len - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, in_len - 1)
    m = np.zeros((out_len, in_len), np.float32)
    m[np.arange(out_len), i0] += 1 - (pos - i0)
    m[np.arange(out_len), i1] += pos - i0
    return m


def _background(q, height, width, detail):
    """Gradient plus clutter shapes, rendered at reduced resolution (out of focus) and upsampled.

    Returns planar [3, N, H, W].
    """
    lh, lw = max(4, height // detail), max(4, width // detail)
    ys = ((np.arange(lh, dtype=np.float32) + 0.5) / lh * 2 - 1)[None, :, None]
    xs = ((np.arange(lw, dtype=np.float32) + 0.5) / lw * 2 - 1)[None, None, :]
    ca, sa = _c(np.cos(q["bg_angle"])), _c(np.sin(q["bg_angle"]))
    t = np.clip(0.5 + 0.5 * (ca * xs + sa * ys), 0, 1)[None]
    img = q["bg_a"].T[:, :, None, None] * (1 - t) + q["bg_b"].T[:, :, None, None] * t
    px = 2.0 / lw
    for k in range(_CLUTTER_SHAPES):
        c = q["clutter"][:, k]
        cx, cy = _c(2.4 * c[:, 0] - 1.2), _c(2.4 * c[:, 1] - 1.2)
        size = _c(0.12 + 0.5 * c[:, 2] ** 1.5)
        aspect = _c(0.3 + 1.4 * c[:, 3])
        ang = _c(np.pi * c[:, 4])
        x, y = xs - cx, ys - cy
        xr = np.cos(ang) * x + np.sin(ang) * y
        yr = -np.sin(ang) * x + np.cos(ang) * y
        kind = _c(np.floor(c[:, 8] * 3))
        box = _rounded_box_sdf(xr, yr, size, size * aspect, 0.02)
        disc = _ellipse_sdf(xr, yr, size, size * aspect)
        stripe = np.abs(np.sin(xr * (4 + 6 * _c(c[:, 3])) * np.pi)) * 0.25 - 0.1
        sdf = np.where(kind == 0, box, np.where(kind == 1, disc, np.maximum(stripe, box)))
        alpha = _coverage(sdf, px) * _c(0.55 + 0.45 * c[:, 9])
        colour = _muted(c[:, 5:8]).T[:, :, None, None]
        img += alpha[None] * (colour - img)
    # Bilinear upsampling as two small matrix products.
    return _interp_matrix(height, lh) @ img @ _interp_matrix(width, lw).T


def _muted(rgb: np.ndarray) -> np.ndarray:
    """Pulls random colours towards grey so backgrounds look like rooms, not candy."""
    rgb = np.asarray(rgb, np.float32)
    grey = rgb.mean(-1, keepdims=True)
    return (0.45 * rgb + 0.55 * grey) * 0.9 + 0.05


def _draw(cv: _Canvas, p, q):
    """Paints the head, features, hair and accessories of every image onto the canvas."""
    u, v, px = cv.u, cv.v, cv.pxc
    n = cv.n
    yaw, pitch = q["yaw"], q["pitch"]
    cy_, sy_ = np.cos(yaw), np.sin(yaw)
    cp_, sp_ = np.cos(pitch), np.sin(pitch)
    rx, ry, fcy = p["face_rx"], p["face_ry"], p["face_cy"]
    depth = 0.85 * rx                                   # head ellipsoid half depth

    def project(x, y, bump=0.0):
        """Frontal face-unit position -> image position under yaw/pitch, and width foreshortening."""
        nx = np.clip(x / (rx * 1.05), -0.95, 0.95)
        ny = np.clip((y - fcy) / (ry * 1.1), -0.95, 0.95)
        z = depth * np.sqrt(np.maximum(0.05, 1 - nx * nx - ny * ny)) + bump
        x2 = x * cy_ + z * sy_
        y2 = fcy + (y - fcy) * cp_ - (z * cy_ - x * sy_) * sp_ * 0.9
        theta = np.arcsin(nx)
        squash = np.clip(np.cos(theta + yaw) / np.cos(theta), 0.25, 1.25)
        return x2.astype(np.float32), y2.astype(np.float32), squash.astype(np.float32)

    skin = p["skin"]
    skin_shadow = skin * 0.72
    hair = p["hair"]

    # Torso and clothes.
    win = cv.window(np.zeros(n), np.full(n, 2.9), np.full(n, 1.25), np.full(n, 2.2))
    if win:
        uu, vv = u[win], v[win]
        # Shoulders: an ellipse whose lower half continues straight down out of the frame.
        sdf = _ellipse_sdf(uu - _c(0.05 * sy_), np.minimum(vv - 1.5, 0.0), 1.2, 0.66)
        cv.paint(win, _coverage(sdf, px), q["cloth"])
        # Neckline.
        sdf = _ellipse_sdf(uu - _c(0.05 * sy_), vv - 0.86, _c(p["neck_w"] * 1.1), 0.14)
        cv.paint(win, _coverage(sdf, px), skin * 0.85)
    # Neck.
    win = cv.window(np.zeros(n), np.full(n, 0.7), p["neck_w"] + 0.05, np.full(n, 0.3))
    if win:
        uu, vv = u[win], v[win]
        sdf = _rounded_box_sdf(uu - _c(0.04 * sy_), vv - 0.68, _c(p["neck_w"]), 0.22, 0.05)
        cv.paint(win, _coverage(sdf, px), skin * 0.8, head=True)

    # Hair outline shared by the back and front layers.
    top_y = fcy - ry                                    # top of the face oval
    hair_cx = -0.06 * sy_                               # hair mass trails the turn slightly
    hx_out = rx + p["hair_side"] + 0.02
    hy_out = ry + p["hair_top"] + 0.02
    hair_cy = fcy - 0.03

    def hair_outer(uu, vv):
        x, y = uu - _c(hair_cx), vv - _c(hair_cy)
        sdf = _ellipse_sdf(x, y, _c(hx_out), _c(hy_out))
        curl = _c(p["hair_curl"])
        if np.any(p["hair_curl"] > 0):
            ang = np.arctan2(y, x)
            sdf = sdf + curl * 0.025 * np.sin(ang * 22)
        # A bun on top of the head.
        bun = _c(p["hair_bun"])
        if np.any(p["hair_bun"] > 0):
            b = np.sqrt(x * x + (y + _c(hy_out) + 0.04) ** 2) - 0.17
            sdf = np.where(bun > 0, np.minimum(sdf, b), sdf)
        return sdf

    def hair_colour(uu, vv):
        """Strand texture: fine stripes fanning out from the crown (planar [3, N, h, w])."""
        y_rel = vv - _c(top_y - p["hair_top"])
        stripes = np.sin((uu - _c(hair_cx)) / (0.25 + np.abs(y_rel)) * 60 + _c(p["hair_part"]) * 40)
        shade = 0.9 + 0.1 * stripes
        return hair.T[:, :, None, None] * shade[None]

    # Back hair (long styles): behind the neck and shoulders.
    back_y = fcy + p["hair_back_y"]
    has_back = p["hair_back_y"] > -1
    if np.any(has_back):
        top = hair_cy - hy_out - 0.03
        bottom = np.maximum(back_y, hair_cy + hy_out) + 0.03
        win = cv.window(hair_cx, (top + bottom) / 2, hx_out + 0.05, (bottom - top) / 2)
        if win:
            uu, vv = u[win], v[win]
            body = _rounded_box_sdf(uu - _c(hair_cx), vv - _c((hair_cy + back_y) / 2),
                                    _c(hx_out * 0.97), _c(np.maximum(back_y - hair_cy, 0.01) / 2), 0.12)
            sdf = np.minimum(hair_outer(uu, vv), body)
            alpha = _coverage(sdf, px) * _c(has_back)
            cv.paint(win, alpha, hair_colour(uu, vv) * 0.8, head=True)

    # Ears (one evaluation for both sides: pick the nearer ear centre).
    ear_l = project(-rx - 0.05 * p["ear_size"], fcy + p["ear_y"] - 0.02, -0.35 * depth)
    ear_r = project(rx + 0.05 * p["ear_size"], fcy + p["ear_y"] - 0.02, -0.35 * depth)
    es = p["ear_size"]
    win = cv.window((ear_l[0] + ear_r[0]) / 2, ear_l[1], np.abs(ear_r[0] - ear_l[0]) / 2 + es, 1.7 * es)
    if win:
        uu, vv = u[win], v[win]
        right = uu > _c((ear_l[0] + ear_r[0]) / 2)
        ex = uu - np.where(right, _c(ear_r[0]), _c(ear_l[0]))
        ey = vv - _c(ear_l[1] * 0.5 + ear_r[1] * 0.5)
        # The ear on the side the head turns away from shows more of itself.
        sq = np.clip(1 + 1.6 * np.where(right, _c(-yaw), _c(yaw)), 0.4, 1.6)
        sdf = _ellipse_sdf(ex, ey, _c(es * 0.55) * sq, _c(es * 1.3))
        cv.paint(win, _coverage(sdf, px), skin * 0.9, head=True)
        inner = _ellipse_sdf(ex * 1.6, ey * 1.25, _c(es * 0.55) * sq, _c(es * 1.3))
        cv.paint(win, _coverage(inner, px, 0.02) * 0.35, skin * 0.55)

    # Face oval with tapering jaw and adjustable chin squareness.
    jaw_shift = 0.12 * sy_
    win = cv.window(np.zeros(n), fcy, rx + 0.08, ry + 0.05)
    uu, vv = u[win], v[win]
    y = vv - _c(fcy)
    below = np.clip(y / _c(ry), 0, 1)
    x = uu - _c(jaw_shift) * below
    width = _c(rx) * (1 - _c(p["jaw_taper"]) * below ** 2)
    power = np.where(y > 0, _c(p["chin_power"]), 2.0)
    kx, ky = np.abs(x) / width, np.abs(y) / _c(ry)
    k = (kx ** power + ky ** power) ** (1.0 / power)
    face_sdf = (k - 1) * np.minimum(width, _c(ry)) * 0.9
    face_alpha = _coverage(face_sdf, px)
    cv.paint(win, face_alpha, skin, head=True)
    face_win = win

    # Blush on the cheeks.
    cheek_l = project(-rx * 0.55, fcy + p["eye_y"] + 0.2, 0.0)
    cheek_r = project(rx * 0.55, fcy + p["eye_y"] + 0.2, 0.0)
    mid = (cheek_l[0] + cheek_r[0]) / 2
    win = cv.window(mid, cheek_l[1], np.abs(cheek_r[0] - cheek_l[0]) / 2 + 0.15, 0.12)
    uu, vv = u[win], v[win]
    right = uu > _c(mid)
    cx = np.where(right, _c(cheek_r[0]), _c(cheek_l[0]))
    sdf = _ellipse_sdf(uu - cx, vv - _c(cheek_l[1]), 0.11, 0.07)
    cv.paint(win, _coverage(sdf, px, 0.08) * _c(p["blush"]), np.array([[0.85, 0.35, 0.35]], np.float32))

    # Nose: shadow on the side away from the light, soft tip shadow, nostrils.
    eye_y = fcy + p["eye_y"]
    tip = project(np.zeros(n), eye_y + p["nose_len"], 0.22 * depth)
    bridge = project(np.zeros(n), eye_y + 0.02, 0.12 * depth)
    nw = p["nose_w"] * tip[2]
    side = np.where(q["light"][:, 0] > 0, -1.0, 1.0).astype(np.float32)   # shadow side
    win = cv.window(tip[0], (tip[1] + bridge[1]) / 2, nw + 0.08, np.abs(tip[1] - bridge[1]) / 2 + 0.08)
    if win:
        uu, vv = u[win], v[win]
        # Bridge shadow: a soft capsule from the brow line to the tip, offset to the shadow side.
        off = _c(side * nw * 0.7)
        sdf = _segment_sdf(uu, vv, _c(bridge[0]) + off * 0.6, _c(bridge[1]), _c(tip[0]) + off, _c(tip[1] - 0.02), 0.014)
        strength = _c(0.35 + 0.35 * np.abs(q["light"][:, 0]))
        cv.paint(win, _coverage(sdf, px, 0.025) * strength, skin * 0.6)
        # Shadow under the tip and the wings.
        sdf = _ellipse_sdf(uu - _c(tip[0]), vv - _c(tip[1] + 0.03), _c(nw * 1.1), 0.028)
        cv.paint(win, _coverage(sdf, px, 0.02) * 0.45, skin * 0.55)
        # Nostrils.
        right = uu > _c(tip[0])
        nx = uu - _c(tip[0]) - np.where(right, 1, -1) * _c(nw * 0.5)
        sdf = _ellipse_sdf(nx, vv - _c(tip[1] + p["nose_w"] * 0.3), _c(nw * 0.4), _c(p["nose_w"] * 0.22))
        cv.paint(win, _coverage(sdf, px, 0.005) * 0.85, skin * 0.3)
        # Highlight on the tip.
        sdf = _ellipse_sdf(uu - _c(tip[0] - 0.25 * side * nw), vv - _c(tip[1] - 0.02), _c(nw * 0.35), _c(nw * 0.3))
        cv.paint(win, _coverage(sdf, px, 0.02) * 0.25, np.minimum(skin * 1.25, 1.0))

    # Mouth position, curve and lips.
    mouth_y = eye_y + p["nose_len"] + p["mouth_gap"]
    mouth = project(np.zeros(n), mouth_y, 0.05 * depth)
    mw = p["mouth_w"] * mouth[2] * (1 + 0.18 * q["smile"])
    curve = 0.06 * q["smile"] - 0.01                     # corners up with the smile
    opening = q["mouth_open"] * 0.06

    # Beard and moustache (under the lips).
    beard = p["beard"]
    if np.any(beard > 0):
        uu, vv = u[face_win], v[face_win]
        # Full beards start at the cheekbones and climb towards the sideburns; stubble follows the jaw.
        top = _c(mouth[1] - 0.03 - 0.1 * (beard == 2)) - 0.25 * np.abs(uu - _c(mouth[0]))
        full = face_sdf - _c(0.025 * (beard == 2))
        sdf = np.maximum(full, top - vv)
        goatee = _ellipse_sdf(uu - _c(mouth[0]), vv - _c((mouth[1] + fcy + ry) / 2 + 0.02), _c(mw * 0.7),
                              _c((fcy + ry - mouth[1]) / 2 + 0.03))
        goatee = np.maximum(goatee, face_sdf - 0.02)
        sdf = np.where(_c(beard) == 3, goatee, sdf)
        strength = np.select([beard == 1, beard == 2, beard == 3], [0.35, 0.95, 0.92], 0.0)
        colour = np.where((beard == 1)[:, None], skin * 0.45 + hair * 0.55, hair)
        cv.paint(face_win, _coverage(sdf, px, 0.01 * _c(beard == 1)) * _c(strength), colour)

    win = cv.window(mouth[0], mouth[1], mw * 1.1 + 0.04, 0.16 + opening + np.abs(curve))
    if win:
        uu, vv = u[win], v[win]
        mx = uu - _c(mouth[0])
        my = vv - _c(mouth[1]) + _c(curve) * ((mx / _c(mw)) ** 2 - 0.3)
        t = np.clip(np.abs(mx) / _c(mw), 0, 1)
        lip_up = _c(p["lip_up"]) * (1 - t ** 2) + 0.004
        lip_low = _c(p["lip_low"]) * (1 - t ** 2) + 0.004
        half_open = _c(opening) * (1 - t ** 2)
        # Upper and lower lip as bands around the mouth line (cupid's bow ignored at this size).
        up = np.maximum(-my - half_open - lip_up, my + half_open)
        up = np.maximum(up, np.abs(mx) - _c(mw))
        low = np.maximum(my - half_open - lip_low, -my + half_open)
        low = np.maximum(low, np.abs(mx) - _c(mw))
        lips = np.minimum(up, low)
        cv.paint(win, _coverage(lips, px), p["lips"])
        # Opening: dark mouth with a band of teeth.
        if np.any(opening > 0):
            is_open = _c(opening > 0)                    # (a closed mouth must not get a zero-height hole)
            hole = np.maximum(np.abs(my) - half_open, np.abs(mx) - _c(mw * 0.92))
            cv.paint(win, _coverage(hole, px) * is_open, np.full((n, 3), 0.18, np.float32) * skin / skin.mean(1, keepdims=True))
            teeth = np.maximum(hole, my + half_open * 0.2)
            cv.paint(win, _coverage(teeth, px) * is_open, np.array([[0.93, 0.91, 0.86]], np.float32))
        # Mouth line and corners.
        line = np.maximum(np.abs(my) - 0.006 - half_open, np.abs(mx) - _c(mw * 0.98))
        cv.paint(win, _coverage(line, px, 0.004) * 0.8, p["lips"] * 0.45)
        # Moustache above the upper lip.
        if np.any(p["moustache"] > 0):
            mou = _ellipse_sdf(mx, my + _c(p["lip_up"] + 0.032), _c(mw * 1.08), 0.028)
            cv.paint(win, _coverage(mou, px) * _c(p["moustache"] * 0.95), hair * 0.9)

    # Moles.
    for k in range(2):
        has = p["moles"] > k
        if not np.any(has):
            continue
        mx_, my_ = p["mole_xy"][:, 2 * k] * rx, fcy + p["mole_xy"][:, 2 * k + 1] * ry
        mole = project(mx_, my_, 0.0)
        win = cv.window(mole[0], mole[1], np.full(n, 0.03), np.full(n, 0.03))
        if win:
            sdf = np.sqrt((u[win] - _c(mole[0])) ** 2 + (v[win] - _c(mole[1])) ** 2) - 0.014
            cv.paint(win, _coverage(sdf, px) * _c(has * 0.85), skin * 0.4)

    # Eyes: almond (two intersecting circles), iris, pupil, upper lid line, crease; blink closes them.
    eyes = [project(side_ * p["eye_dx"], eye_y, 0.0) for side_ in (-1.0, 1.0)]
    mid = (eyes[0][0] + eyes[1][0]) / 2
    ew = p["eye_w"]
    win = cv.window(mid, eye_y, np.abs(eyes[1][0] - eyes[0][0]) / 2 + 1.3 * ew + 0.03, ew + 0.04)
    if win:
        uu, vv = u[win], v[win]
        right = uu > _c(mid)
        sgn = np.where(right, 1.0, -1.0).astype(np.float32)
        ex = (uu - np.where(right, _c(eyes[1][0]), _c(eyes[0][0]))) * sgn   # mirrored: +x = outer corner
        ey = vv - np.where(right, _c(eyes[1][1]), _c(eyes[0][1]))
        squash = np.where(right, _c(eyes[1][2]), _c(eyes[0][2]))
        tilt = _c(p["eye_tilt"])
        ct, st = np.cos(tilt), np.sin(tilt)
        lx = (ct * ex - st * ey) / squash
        ly = st * ex + ct * ey
        w = _c(ew)
        h = np.maximum(w * _c(p["eye_open"] * (1 - q["blink"])), 0.002)
        radius = (w * w + h * h) / (2 * h)
        upper = np.sqrt(lx * lx + (ly - (radius - h)) ** 2) - radius    # arc through the corners, top at -h
        lower = np.sqrt(lx * lx + (ly + (radius - h * 0.8)) ** 2) - radius
        # Bounded by the corners too: a closed eye's circles are nearly tangent far beyond them.
        almond = np.maximum(np.maximum(upper, lower), np.abs(lx) - w) * squash
        cv.paint(win, _coverage(almond, px), np.array([[0.93, 0.92, 0.90]], np.float32) * (0.8 + 0.2 * skin))
        gx = _c(q["gaze"][:, 0]) * sgn * w * 0.5
        gy = _c(q["gaze"][:, 1]) * w * 0.3
        ir = w * _c(p["iris_r"])
        iris_d = np.sqrt((ex / squash - gx) ** 2 + (ey - gy) ** 2)
        cv.paint(win, _coverage(np.maximum(iris_d - ir, almond), px), p["iris"])
        cv.paint(win, _coverage(np.maximum(iris_d - ir * 0.45, almond), px), np.full((n, 3), 0.03, np.float32))
        # Upper lid line (lashes) and crease.
        # (ly < h keeps only the arc near the eye: a blink makes the lid circle huge.)
        lid = np.maximum(np.maximum(np.abs(upper) - 0.005 - 0.008 * _c(q["blink"]), np.abs(lx) - w * 1.02), ly - h) * squash
        cv.paint(win, _coverage(lid, px) * 0.75, np.full((n, 3), 0.1, np.float32))
        crease = np.maximum(np.maximum(np.abs(upper + h * 0.55 + 0.012) - 0.004, np.abs(lx) - w * 0.95), ly) * squash
        cv.paint(win, _coverage(crease, px, 0.006) * 0.35, skin_shadow * 0.8)

    # Brows: a thick arc above each eye, tapering outwards.
    win = cv.window(mid, eye_y - p["brow_gap"] - ew * p["eye_open"],
                    np.abs(eyes[1][0] - eyes[0][0]) / 2 + 1.3 * ew * p["brow_len"] + 0.03, np.full(n, 0.17))
    if win:
        uu, vv = u[win], v[win]
        right = uu > _c(mid)
        sgn = np.where(right, 1.0, -1.0).astype(np.float32)
        bx = (uu - np.where(right, _c(eyes[1][0]), _c(eyes[0][0]))) * sgn
        by = vv - np.where(right, _c(eyes[1][1]), _c(eyes[0][1])) + _c(p["brow_gap"] + ew * p["eye_open"] + q["brow_raise"])
        squash = np.where(right, _c(eyes[1][2]), _c(eyes[0][2]))
        ang = _c(p["brow_angle"])
        lx = (np.cos(ang) * bx - np.sin(ang) * by) / squash
        ly = np.sin(ang) * bx + np.cos(ang) * by
        hl = _c(ew * p["brow_len"])
        t = np.clip(lx / hl, -1, 1)
        centre = -_c(p["brow_arch"]) * (1 - t * t)
        thick = _c(p["brow_thick"]) * (1.1 - 0.5 * (t + 1) / 2)
        sdf = np.maximum(np.abs(ly - centre) - thick, np.abs(lx) - hl) * squash
        cv.paint(win, _coverage(sdf, px, 0.004) * 0.92, hair * 0.8 + 0.02)

    # Front hair: inside the outer hair shape and above a hairline that drops at the temples.
    side_y = fcy + p["hair_side_y"]
    top = hair_cy - hy_out - 0.25 * p["hair_bun"] - 0.03
    bottom = np.minimum(hair_cy + hy_out, np.maximum(side_y, top_y + p["hairline"] * ry + 0.3 * hx_out ** 2
                                                     + np.abs(p["hair_part"]) * hx_out)) + 0.03
    win = cv.window(hair_cx, (top + bottom) / 2, hx_out + 0.05, (bottom - top) / 2)
    if win:
        uu, vv = u[win], v[win]
        x = uu - _c(hair_cx)
        rel = np.abs(x) / _c(rx)
        edge = np.clip((rel - 0.74) / 0.26, 0, 1)
        edge = edge * edge * (3 - 2 * edge)                        # smoothstep towards the temples
        centre_line = _c(top_y + p["hairline"] * ry) + _c(p["hair_part"]) * x + 0.3 * x * x
        line = centre_line + edge * (np.maximum(centre_line, _c(side_y)) - centre_line)
        sdf = np.maximum(hair_outer(uu, vv), vv - line)
        # Bald crowns keep only the hair at the sides.
        bald = p["hair_style"] == 0
        if np.any(bald):
            sdf = np.where(_c(bald), np.maximum(sdf, 0.82 * _c(rx) - np.abs(x)), sdf)
        alpha = _coverage(sdf, px) * _c(np.where(p["hair_style"] == 1, 0.8, 1.0))
        cv.paint(win, alpha, hair_colour(uu, vv), head=True)

    # Glasses: two frames, a bridge and the temples.
    has_glasses = p["glasses"] > 0
    if np.any(has_glasses):
        gs = ew * p["glasses_size"] * 1.25
        win = cv.window(mid, eye_y, np.maximum(np.abs(eyes[1][0] - eyes[0][0]) / 2 + gs * 2.2, rx) + 0.03,
                        gs * 1.2 + 0.03)
        if win:
            uu, vv = u[win], v[win]
            right = uu > _c(mid)
            ex = uu - np.where(right, _c(eyes[1][0]), _c(eyes[0][0]))
            ey = vv - np.where(right, _c(eyes[1][1]), _c(eyes[0][1])) - 0.01
            squash = np.where(right, _c(eyes[1][2]), _c(eyes[0][2]))
            ex = ex / squash
            round_ = np.sqrt(ex * ex + (ey * 1.1) ** 2) - _c(gs)
            rect = _rounded_box_sdf(ex, ey, _c(gs * 1.05), _c(gs * 0.72), 0.03)
            rim = np.where(_c(p["glasses"]) == 1, round_, rect)
            lens = _coverage(rim, px) * 0.12
            frame = np.abs(rim) - 0.015
            bridge_sdf = _segment_sdf(uu, vv, _c(eyes[0][0] + gs * 0.95 * eyes[0][2]), _c(eye_y - 0.02),
                                      _c(eyes[1][0] - gs * 0.95 * eyes[1][2]), _c(eye_y - 0.02), 0.009)
            # Temples: from the outer edge of each lens to the side of the head.
            outward = ex * np.where(right, 1.0, -1.0)
            temple = np.maximum(np.abs(vv - _c(eye_y - 0.03)) - 0.008, _c(gs * 0.95) - outward)
            temple = np.maximum(temple, np.abs(uu - _c(mid)) - _c(rx * 0.98))
            frame = np.minimum(np.minimum(frame, bridge_sdf), temple)
            on = _c(has_glasses)
            cv.paint(win, lens * on, np.array([[0.75, 0.85, 0.95]], np.float32))
            cv.paint(win, _coverage(frame, px) * on, p["glasses_frame"])



def _light(cv: _Canvas, p, q):
    """Directional light on the head ellipsoid, a gentle gradient elsewhere, colour temperature and exposure."""
    l = q["light"]
    lx, ly, lz = _c(l[:, 0]), _c(l[:, 1]), _c(l[:, 2])
    amb = _c(q["ambient"])
    # Head normal from an ellipsoid slightly larger than the face oval.
    nx = cv.u / _c(p["face_rx"] * 1.15)
    ny = (cv.v - _c(p["face_cy"])) / _c(p["face_ry"] * 1.2)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0.02, 1))
    head = amb + (1 - amb) * 1.1 * np.maximum(nx * lx + ny * ly + nz * lz, 0)
    flat = amb + (1 - amb) * (0.8 + 0.25 * (lx * cv.frame_x[None, None, :] + ly * cv.frame_y[None, :, None]))
    shade = flat + cv.head * (head - flat)
    cv.img *= shade[None]
    cv.img *= (q["tint"] * q["exposure"][:, None]).T[:, :, None, None]


def _blur(img, sigma):
    """Gaussian blur with one sigma (pixels) per image on planar [3, N, H, W]; edge-renormalised.

    Separable, as two small matrix products per image (B_y @ img @ B_x^T) so BLAS does the
    work. One image at a time: a batched product could round differently with the batch.
    """
    for i in np.flatnonzero(sigma > 0.05):
        radius = int(np.ceil(3 * sigma[i]))
        taps = np.arange(-radius, radius + 1, dtype=np.float32)
        kernel = np.exp(-0.5 * (taps / np.float32(sigma[i])) ** 2)

        def matrix(size):
            d = np.arange(size)[None, :] - np.arange(size)[:, None]      # column - row
            m = np.where(np.abs(d) <= radius, kernel[np.clip(d + radius, 0, 2 * radius)], 0.0)
            return (m / m.sum(-1, keepdims=True)).astype(np.float32)     # renormalised at the edges

        img[:, i] = matrix(img.shape[2]) @ img[:, i] @ matrix(img.shape[3]).T
    return img


def _finish(cv: _Canvas, ids, smp, seed, q, blur_scale):
    """Blur, sensor noise and quantisation; returns uint8 [N, H, W, 3]."""
    img = _blur(cv.img, q["blur"] * blur_scale)
    noise_sigma = q["noise"]
    for i in range(cv.n):
        if noise_sigma[i] > 0:
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _TAG_NOISE, int(ids[i]), int(smp[i]), cv.h, cv.w])
            img[:, i] += noise_sigma[i] * rng.standard_normal((3, cv.h, cv.w), dtype=np.float32)
    img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img.transpose(1, 2, 3, 0))


def _similarity(scale, roll):
    """2x2 matrices mapping frame offsets to face units: rotate by -roll, divide by scale."""
    c, s = np.cos(roll) / scale, np.sin(roll) / scale
    return np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2).astype(np.float64)


def render(p, q, height, width, inv, centre, ids, smp, seed, blur_scale=None, background_detail=4):
    """Renders faces given identity params `p`, image params `q` and the frame->face transform.

    `inv` [N, 2, 2] and `centre` [N, 2] map canvas frame coordinates (in [-1, 1]) to face
    units: ``face = inv @ (frame - centre)``. Mostly useful to tests that hold pose and
    light fixed while changing the identity; normal callers use render_faces/render_scenes.
    """
    cv = _Canvas(inv.astype(np.float64), centre.astype(np.float64), height, width)
    cv.img[:] = _background(q, height, width, background_detail)
    _draw(cv, p, q)
    _light(cv, p, q)
    if blur_scale is None:
        blur_scale = np.full(cv.n, width / 64.0, np.float32)   # blur sigma is given at 64 px
    return _finish(cv, ids, smp, seed, q, blur_scale)


def _face_transform(q):
    """Frame -> face transform of the aligned crop: the face square enlarged by the margin, jittered."""
    inv = _similarity(q["scale"].astype(np.float64), q["roll"].astype(np.float64))
    return inv, q["shift"].astype(np.float64)


def render_faces(identities, samples, resolution: int, seed: int = 0, *, conditions_of=None,
                 chunk: int = 16) -> np.ndarray:
    """Aligned face crops, uint8 [N, R, R, 3], each a pure function of (seed, identity, sample).

    `conditions_of`, an optional pair (identities2, samples2), renders each person under
    the pose, expression, light, background, camera and noise of another (identity,
    sample): a controlled experiment where only identity changes (used by the tests).
    """
    ids = np.asarray(identities, np.int64).reshape(-1)
    smp = np.asarray(samples, np.int64).reshape(-1)
    if ids.shape != smp.shape:
        raise ValueError(f"identities {ids.shape} and samples {smp.shape} must have the same length")
    if resolution < 8:
        raise ValueError(f"resolution {resolution} is too small to draw a face (need >= 8)")
    cond_ids, cond_smp = _conditions(ids, smp, conditions_of)
    out = np.empty((len(ids), resolution, resolution, 3), np.uint8)
    # Chunks keep the [chunk, R, R] temporaries in cache; results do not depend on the chunking.
    for start in range(0, len(ids), chunk):
        sl = slice(start, start + chunk)
        p = identity_params(ids[sl], seed)
        q = image_params(cond_ids[sl], cond_smp[sl], seed)
        inv, centre = _face_transform(q)
        out[sl] = render(p, q, resolution, resolution, inv, centre, cond_ids[sl], cond_smp[sl], seed)
    return out


def scene_boxes(identities, samples, seed: int = 0, min_size: float = 0.25, max_size: float = 0.6) -> np.ndarray:
    """Where each scene's face square lies: float32 [N, 4] (y0, x0, y1, x1) in [0, 1]."""
    ids = np.asarray(identities, np.int64).reshape(-1)
    smp = np.asarray(samples, np.int64).reshape(-1)
    r = _rows(seed, _TAG_SCENE, np.stack([ids, smp], 1), 4)
    side = min_size + (max_size - min_size) * r[:, 0]
    y0 = (1 - side) * r[:, 1]
    x0 = (1 - side) * r[:, 2]
    return np.stack([y0, x0, y0 + side, x0 + side], 1).astype(np.float32)


def _conditions(ids, smp, conditions_of):
    if conditions_of is None:
        return ids, smp
    cond_ids = np.asarray(conditions_of[0], np.int64).reshape(-1)
    cond_smp = np.asarray(conditions_of[1], np.int64).reshape(-1)
    if cond_ids.shape != ids.shape or cond_smp.shape != ids.shape:
        raise ValueError("conditions_of must hold one (identity, sample) per image")
    return cond_ids, cond_smp


def render_scenes(identities, samples, scene_resolution: int, seed: int = 0, *, conditions_of=None,
                  chunk: int = 8, min_size: float = 0.25, max_size: float = 0.6):
    """Scenes with one face each: (uint8 [N, S, S, 3], float32 boxes [N, 4] as (y0, x0, y1, x1) in [0, 1]).

    The person, pose, expression and light are those of ``render_faces`` for the same
    (seed, identity, sample); the face square (see FACE_BOX_MARGIN) is placed at a random
    position with a side of `min_size`..`max_size` of the frame, over a cluttered background.
    `conditions_of` is as in ``render_faces`` (it also fixes the box).
    """
    ids = np.asarray(identities, np.int64).reshape(-1)
    smp = np.asarray(samples, np.int64).reshape(-1)
    if ids.shape != smp.shape:
        raise ValueError(f"identities {ids.shape} and samples {smp.shape} must have the same length")
    cond_ids, cond_smp = _conditions(ids, smp, conditions_of)
    boxes = scene_boxes(cond_ids, cond_smp, seed, min_size, max_size)
    out = np.empty((len(ids), scene_resolution, scene_resolution, 3), np.uint8)
    # Chunks of faces at similar places share tight painting windows (results do not depend on this).
    order = np.lexsort(((boxes[:, 1] + boxes[:, 3]), np.floor((boxes[:, 0] + boxes[:, 2]) * 2)))
    for start in range(0, len(ids), chunk):
        sl = order[start:start + chunk]
        p = identity_params(ids[sl], seed)
        q = image_params(cond_ids[sl], cond_smp[sl], seed)
        b = boxes[sl].astype(np.float64)
        side = b[:, 2] - b[:, 0]               # box side as a fraction of the frame = its half side in frame units
        centre = np.stack([b[:, 1] + b[:, 3] - 1, b[:, 0] + b[:, 2] - 1], 1)
        # The face square [-_BOX_HALF, _BOX_HALF] in face units fills the box.
        inv = _similarity(side / _BOX_HALF, q["roll"].astype(np.float64))
        # Blur is specified in pixels of a 64 px aligned crop; scale it to this face's crop size.
        blur_scale = (side * scene_resolution * (1 + 2 * FACE_BOX_MARGIN) / 64.0).astype(np.float32)
        out[sl] = render(p, q, scene_resolution, scene_resolution, inv, centre, cond_ids[sl], cond_smp[sl], seed,
                         blur_scale=blur_scale, background_detail=2)
    return out, boxes
