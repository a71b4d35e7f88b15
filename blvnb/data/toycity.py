"""toycity: procedural long-tailed street scenes, written in the real datasets' layouts.

Why it exists
-------------
The papers train on Cityscapes, GTA5 and SYNTHIA. Those data sets are large and need registrations, so
the quick and smoke profiles of this book train on *toycity* instead: a street-scene generator small
enough to run on a laptop, but built to reproduce what the papers are about.

* **The long tail.** Class pixel shares follow Cityscapes' (:data:`CITYSCAPES_SHARES`): road a third of
  all pixels, motorcycles less than a thousandth. The tail comes mostly from *occurrence* -- trucks,
  buses, trains and motorcycles appear in a few images only -- and partly from *size* -- poles, lights
  and signs are in most images but small. Together these give the four groups of DARS Sec. 4.4
  (frequent/rare x large/small). The rare vehicles are scheduled with a low-discrepancy sequence
  (index times an irrational step, modulo 1) over the image index, so any run of N consecutive images
  holds the intended number of them to within about two, and the shares of small data sets do not
  swing with luck.
* **Classes that colour cannot separate.** Groups that are confused in real data share one colour
  distribution: road/sidewalk, person/rider, car/truck/bus/train, building/wall/fence,
  vegetation/terrain. Every instance draws its own colour from its group's distribution, and all of
  them get texture (noise, windows, bars). Only shape and context tell them apart: a sidewalk is the
  strip beside the road behind a kerb line, a wall is a low long slab in front of the buildings, a truck
  is a tall box, a bus a long box with a band of windows, a train runs on rails, a rider sits on a
  two-wheeler.
* **Perspective.** A pinhole camera over a flat street: objects are boxes and billboards placed in
  metres and projected, so they shrink with depth and the scene looks the same at any image size
  (everything is drawn in relative coordinates; pixel coverage is sampled at pixel centres, so class
  shares do not drift with the resolution).
* **Styles.** ``cityscapes`` is the "real" target (texture, a vertical lighting gradient, slight blur,
  sensor noise). ``gta`` is a synthetic source (flat shading, saturated colours, sharp edges, vehicles
  15 % larger and more cars). ``synthia`` is another source seen from higher up (horizon higher, more
  road) that has only SYNTHIA's 16 classes (no terrain, truck or train).
* **Real layouts.** :func:`write_tree` writes exactly the files and id encodings of the real data sets
  (Cityscapes ``gtFine`` label ids, GTA5 palette PNGs, SYNTHIA 16-bit 3-channel PNGs), so the real
  loaders read toycity and a test of a loader on toycity is a test of the loader.

How an image is made: the label map is drawn first, as an *instance* map (every face of every object is
an instance with a Cityscapes label id, a colour and a texture), painter-style from far to near. The
RGB image is then rendered from the instance map with numpy. Ignore pixels (about 12 %) carry *void*
Cityscapes ids -- the ego vehicle's hood (1), static objects (4), dynamic objects (5), ground (6),
parking (9), rail track (10), guard rail (14) -- which map to train id 255.

Everything is deterministic per ``(seed, index, style)``. About 8 ms per 128x256 image on one CPU core.

API: :func:`render` (image + train ids), :func:`render_label_ids` / :func:`render_full` (label ids with
the void ids, instance ids), :func:`write_tree` (a data set on disk), :func:`ensure` (the same, cached),
:func:`parse_size`, :func:`write_png16`, and the data :data:`STYLES`, :data:`CITYSCAPES_SHARES`,
:data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from blvnb import classes as C
from blvnb.errors import ConfigError

log = logging.getLogger(__name__)

STYLES = ("cityscapes", "gta", "synthia")
#: Bump whenever the generated pixels change: it is part of the cache key of :func:`ensure`.
GENERATOR_VERSION = 1
MIN_SIZE = (32, 64)
#: The largest image toycity draws: at most this many pixels (e.g. 2048x4096, twice Cityscapes' side) and
#: :data:`MAX_SIDE` per side. Larger sizes would only exhaust memory while an image is drawn.
MAX_PIXELS = 2048 * 4096
MAX_SIDE = 8192

#: Cityscapes' pixel shares (fraction of *all* pixels, ignore included), the target of the generator.
CITYSCAPES_SHARES: dict[str, float] = {
    "road": 0.33, "sidewalk": 0.05, "building": 0.20, "wall": 0.006, "fence": 0.008, "pole": 0.011,
    "traffic light": 0.002, "traffic sign": 0.005, "vegetation": 0.14, "terrain": 0.01, "sky": 0.035,
    "person": 0.011, "rider": 0.0013, "car": 0.06, "truck": 0.002, "bus": 0.002, "train": 0.002,
    "motorcycle": 0.0008, "bicycle": 0.004, "ignore": 0.12,
}

CITYSCAPES_TRAIN_CITIES = (
    "aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
    "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich",
)
CITYSCAPES_VAL_CITIES = ("frankfurt", "lindau", "munster")

_ID = {lab.name: lab.id for lab in C.LABELS}  # Cityscapes label ids by name


# --- styles ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Style:
    code: int
    cam_h: tuple[float, float]  # camera height, metres
    horizon: tuple[float, float]  # horizon row / H
    focal: float  # focal length / W
    road_extra: float  # extra road width, metres (synthia: wider streets)
    vehicle_scale: float
    car_rate: float
    person_rate: float
    saturation: float
    texture: float  # multiplier of texture amplitudes
    blur: float  # Gaussian radius in pixels at W = 256
    noise: float  # sensor noise sigma, 8-bit units
    gradient: float  # strength of the vertical lighting gradient
    synthia_classes: bool  # no terrain, truck, train
    hood: float  # probability that the ego vehicle's bonnet is in view


_STYLE = {
    "cityscapes": _Style(code=0, cam_h=(1.15, 1.35), horizon=(0.38, 0.44), focal=1.10, road_extra=0.0,
                         vehicle_scale=1.0, car_rate=1.0, person_rate=1.0, saturation=0.85, texture=1.0,
                         blur=0.6, noise=3.0, gradient=0.35, synthia_classes=False, hood=1.0),
    "gta": _Style(code=1, cam_h=(1.2, 1.5), horizon=(0.40, 0.48), focal=1.05, road_extra=0.0,
                  vehicle_scale=1.15, car_rate=1.3, person_rate=0.85, saturation=1.45, texture=0.25,
                  blur=0.0, noise=0.0, gradient=0.10, synthia_classes=False, hood=0.6),
    "synthia": _Style(code=2, cam_h=(2.6, 4.5), horizon=(0.27, 0.34), focal=0.95, road_extra=3.0,
                      vehicle_scale=1.0, car_rate=1.1, person_rate=1.2, saturation=1.0, texture=0.6,
                      blur=0.0, noise=1.5, gradient=0.15, synthia_classes=True, hood=0.0),
}


# --- colours: one distribution per confusable group ------------------------------------------------

_FACADES = ((170, 160, 145), (140, 135, 130), (150, 95, 80), (200, 195, 185), (185, 165, 120), (110, 110, 115))
_PAINTS = ((230, 230, 230), (160, 160, 165), (35, 35, 40), (70, 70, 75), (150, 30, 30), (30, 50, 120),
           (40, 80, 60), (200, 170, 40), (120, 120, 135), (200, 200, 205))
_CLOTHES = ((30, 30, 35), (40, 45, 80), (90, 90, 95), (150, 40, 40), (200, 200, 200), (110, 80, 60),
            (60, 90, 60), (170, 150, 110), (70, 60, 100))
_SIGNS = ((200, 30, 30), (30, 70, 180), (230, 200, 40), (230, 230, 230))


def _jitter(rng, base, bright=(0.8, 1.15), hue=10.0):
    k = rng.uniform(*bright)
    d = rng.uniform(-hue, hue, 3)
    return (base[0] * k + d[0], base[1] * k + d[1], base[2] * k + d[2])


def _color(rng, group: str):
    """A colour drawn from a confusable group's distribution (the same for all classes in the group)."""
    if group == "flat":  # road, sidewalk, parking, ground
        g = rng.uniform(75, 135)
        return _jitter(rng, (g + 5, g - 3, g + 8), (0.9, 1.1), 6)
    if group == "facade":  # building, wall, fence
        return _jitter(rng, _FACADES[rng.integers(len(_FACADES))])
    if group == "green":  # vegetation, terrain
        return _jitter(rng, (75, 110, 45), (0.7, 1.25), 14)
    if group == "vehicle":  # car, truck, bus, train
        return _jitter(rng, _PAINTS[rng.integers(len(_PAINTS))], (0.85, 1.1), 8)
    if group == "cloth":  # person, rider
        return _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], (0.8, 1.2), 10)
    if group == "skin":
        return _jitter(rng, (200, 160, 130), (0.6, 1.1), 8)
    if group == "glass":
        return _jitter(rng, (45, 52, 62), (0.7, 1.3), 5)
    if group == "metal":  # poles, frames
        return _jitter(rng, (120, 120, 125), (0.6, 1.3), 6)
    if group == "dark":  # light housings, tyres
        return _jitter(rng, (35, 35, 38), (0.7, 1.3), 4)
    if group == "sky":
        return _jitter(rng, (150, 185, 225), (0.8, 1.12), 12)
    if group == "sign":
        return _jitter(rng, _SIGNS[rng.integers(len(_SIGNS))], (0.85, 1.1), 8)
    # "any": void objects
    return tuple(rng.uniform(40, 200, 3))


# --- the rare-class schedule ----------------------------------------------------------------------

_SCHEDULE = {  # class -> (irrational step, fraction of images that contain it)
    "truck": (0.6180339887, 0.060),
    "bus": (0.4142135624, 0.050),
    "train": (0.7320508076, 0.035),
    "motorcycle": (0.2360679775, 0.065),
}


@lru_cache(maxsize=256)
def _schedule_offset(seed: int, style_code: int, key: int) -> float:
    return float(np.random.default_rng([seed, style_code, 9000 + key]).random())


def _scheduled(name: str, seed: int, style_code: int, index: int) -> bool:
    """True for a fraction p of image indices, evenly spread (a low-discrepancy sequence)."""
    step, p = _SCHEDULE[name]
    key = list(_SCHEDULE).index(name)
    return ((_schedule_offset(seed, style_code, key) + index * step) % 1.0) < p


# --- the canvas: an instance map drawn with unbiased pixel-centre coverage -------------------------

_TEX_NONE, _TEX_WINDOWS, _TEX_BARS, _TEX_BAND = 0, 1, 2, 3
_PLANE_NONE, _PLANE_SIDE, _PLANE_FRONT = 0, 1, 2


class _Canvas:
    """Instance map plus a pinhole camera. Pixel (i, j) covers [j, j+1) x [i, i+1); a shape covers a pixel
    when it contains the pixel's centre, so expected areas are exact at every resolution."""

    def __init__(self, H, W, f, hor, vp, cam_h):
        self.H, self.W, self.f, self.hor, self.vp, self.cam_h = H, W, f, hor, vp, cam_h
        self.im = Image.new("I", (W, H), 0)
        self.draw = ImageDraw.Draw(self.im)
        self.lid: list[int] = []
        self.rgb: list[tuple] = []
        self.amp: list[float] = []
        self.tex: list[int] = []
        self.tp: list[tuple] = []
        self.plane: list[int] = []
        self.pc: list[float] = []
        self.thing: list[int] = []
        self.n_things = 0

    # instances
    def add(self, lid, rgb, amp=0.05, tex=_TEX_NONE, tp=(1.0, 1.0, 0.5, 0.5), plane=_PLANE_NONE, pc=0.0, thing=0):
        self.lid.append(lid)
        self.rgb.append(rgb)
        self.amp.append(amp)
        self.tex.append(tex)
        self.tp.append(tp)
        self.plane.append(plane)
        self.pc.append(pc)
        self.thing.append(thing)
        return len(self.lid) - 1

    def new_thing(self):
        self.n_things += 1
        return self.n_things

    # projection (metres -> continuous pixel coordinates)
    def px(self, x, z):
        return self.vp + self.f * x / z

    def py(self, y, z):
        return self.hor + self.f * (self.cam_h - y) / z

    # primitives
    def rect(self, x0, y0, x1, y1, k):
        j0, j1 = max(math.ceil(x0 - 0.5), 0), min(math.ceil(x1 - 0.5) - 1, self.W - 1)
        i0, i1 = max(math.ceil(y0 - 0.5), 0), min(math.ceil(y1 - 0.5) - 1, self.H - 1)
        if j1 >= j0 and i1 >= i0:
            self.draw.rectangle((j0, i0, j1, i1), fill=k)

    def _bbox(self, x0, y0, x1, y1):
        j0, j1 = max(math.ceil(x0 - 0.5), 0), min(math.floor(x1 - 0.5), self.W - 1)
        i0, i1 = max(math.ceil(y0 - 0.5), 0), min(math.floor(y1 - 0.5), self.H - 1)
        return j0, i0, j1, i1

    def _points(self, mask, j0, i0, k):
        ii, jj = np.nonzero(mask)
        if len(ii):
            self.draw.point(list(zip((jj + j0).tolist(), (ii + i0).tolist())), fill=k)

    def poly(self, pts, k):
        """A convex polygon (vertices in order, either orientation)."""
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        j0, i0, j1, i1 = self._bbox(min(xs), min(ys), max(xs), max(ys))
        if j1 < j0 or i1 < i0:
            return
        n = len(pts)
        area2 = sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))
        if abs(area2) < 1e-9:
            return
        orient = 1.0 if area2 > 0 else -1.0
        if (j1 - j0 + 1) * (i1 - i0 + 1) > 400:
            shrunk = self._shrink(pts, orient)
            if shrunk is not None:
                self.draw.polygon([(x - 0.5, y - 0.5) for x, y in shrunk], fill=k)
                return
        # exact pixel-centre test over the (clipped) bounding box: every edge function >= 0
        a = np.empty((n, 3))
        for i in range(n):
            ax, ay = pts[i]
            bx, by = pts[(i + 1) % n]
            a[i] = ((bx - ax) * orient, -(by - ay) * orient, ((by - ay) * ax - (bx - ax) * ay) * orient)
        cx = np.arange(j0, j1 + 1, dtype=np.float64) + 0.5
        cy = np.arange(i0, i1 + 1, dtype=np.float64) + 0.5
        val = a[:, 0, None, None] * cy[None, :, None] + (a[:, 1, None] * cx[None, :] + a[:, 2, None])[:, None, :]
        self._points((val >= 0).all(axis=0), j0, i0, k)

    @staticmethod
    def _shrink(pts, orient):
        """Move every edge inwards by the half pixel that PIL's inclusive fill adds; None if it folds."""
        n = len(pts)
        lines = []
        for i in range(n):
            ax, ay = pts[i]
            bx, by = pts[(i + 1) % n]
            ex, ey = bx - ax, by - ay
            L = math.hypot(ex, ey)
            if L < 1e-9:
                continue
            nx, ny = -ey / L * orient, ex / L * orient  # inward normal
            d = 0.5 * max(abs(nx), abs(ny))
            lines.append((ax + nx * d, ay + ny * d, ex, ey))
        out = []
        m = len(lines)
        for i in range(m):
            ax, ay, aex, aey = lines[i - 1]
            bx, by, bex, bey = lines[i]
            den = aex * bey - aey * bex
            if abs(den) < 1e-12:
                out.append((bx, by))
                continue
            t = ((bx - ax) * bey - (by - ay) * bex) / den
            out.append((ax + aex * t, ay + aey * t))
        for i in range(m):  # an edge that reverses direction means the polygon was thinner than a pixel
            ex, ey = out[(i + 1) % m][0] - out[i][0], out[(i + 1) % m][1] - out[i][1]
            if ex * lines[i][2] + ey * lines[i][3] <= 0:
                return None
        return out

    def ellipse(self, cx, cy, rx, ry, k):
        j0, i0, j1, i1 = self._bbox(cx - rx, cy - ry, cx + rx, cy + ry)
        if j1 < j0 or i1 < i0 or rx <= 0 or ry <= 0:
            return
        if (j1 - j0 + 1) * (i1 - i0 + 1) > 400:
            self.draw.ellipse((cx - rx, cy - ry, cx + rx - 1.0, cy + ry - 1.0), fill=k)
            return
        gx = (np.arange(j0, j1 + 1, dtype=np.float64)[None, :] + 0.5 - cx) / rx
        gy = (np.arange(i0, i1 + 1, dtype=np.float64)[:, None] + 0.5 - cy) / ry
        self._points(gx * gx + gy * gy <= 1.0, j0, i0, k)

    # world primitives
    def ground(self, xa, xb, za, zb, k):
        """A rectangle on the road plane, x in [xa, xb], depth in [za, zb]."""
        self.poly([(self.px(xa, za), self.py(0, za)), (self.px(xb, za), self.py(0, za)),
                   (self.px(xb, zb), self.py(0, zb)), (self.px(xa, zb), self.py(0, zb))], k)

    def side(self, x, za, zb, y0, y1, k):
        """A vertical face of the plane X = x, depth in [za, zb], height in [y0, y1]."""
        self.poly([(self.px(x, za), self.py(y0, za)), (self.px(x, za), self.py(y1, za)),
                   (self.px(x, zb), self.py(y1, zb)), (self.px(x, zb), self.py(y0, zb))], k)

    def front(self, xa, xb, z, y0, y1, k):
        """A face of the plane Z = z facing the camera."""
        self.rect(self.px(xa, z), self.py(y1, z), self.px(xb, z), self.py(y0, z), k)

    def box(self, x0, x1, y0, y1, z0, z1, k_front, k_side, k_top=None):
        """The visible faces of an axis-aligned box (the camera sits at x = 0, y = cam_h)."""
        if x1 < 0:
            self.side(x1, z0, z1, y0, y1, k_side)
        elif x0 > 0:
            self.side(x0, z0, z1, y0, y1, k_side)
        if y1 < self.cam_h and k_top is not None:
            self.poly([(self.px(x0, z0), self.py(y1, z0)), (self.px(x1, z0), self.py(y1, z0)),
                       (self.px(x1, z1), self.py(y1, z1)), (self.px(x0, z1), self.py(y1, z1))], k_top)
        self.front(x0, x1, z0, y0, y1, k_front)


# --- the scene -------------------------------------------------------------------------------------

Z_FAR = 160.0


class _Scene:
    def __init__(self, style: str, index: int, seed: int, size: tuple[int, int]):
        st = self.st = _STYLE[style]
        self.style, self.index, self.seed = style, index, seed
        r = self.r = np.random.default_rng([seed, index, st.code])
        H, W = size
        f = st.focal * W * r.uniform(0.95, 1.05)
        hor = H * r.uniform(*st.horizon)
        cam_h = r.uniform(*st.cam_h)
        vp = W * (0.5 + r.uniform(-0.06, 0.06))
        self.cv = _Canvas(H, W, f, hor, vp, cam_h)
        self.z_bot = f * cam_h / (H - hor)  # depth of the ground at the bottom row
        self.objects: list[tuple[float, object, tuple]] = []  # (depth, draw function, args)
        self.rare = {n: _scheduled(n, seed, st.code, index) for n in _SCHEDULE}
        if st.synthia_classes:
            self.rare["truck"] = self.rare["train"] = False

    def U(self, a, b):
        return float(self.r.uniform(a, b))

    def chance(self, p):
        return float(self.r.random()) < p

    # --- layout ---
    def build(self):
        cv, r, st = self.cv, self.r, self.st
        cv.add(_ID["sky"], _color(r, "sky"), amp=0.02)  # instance 0: the canvas starts as sky
        # street cross-section (metres; the camera is at x = 0)
        self.rr = self.U(1.5, 3.2) + st.road_extra * 0.5  # road edge on the right
        self.rl = self.U(5.0, 10.0) + st.road_extra  # road edge on the left
        self.park = {+1: self.chance(0.4), -1: self.chance(0.4)}
        self.sw = {s: self.U(3.0, 6.0) for s in (-1, 1)}
        self.kind = {s: ("buildings" if self.chance(0.72) else "park" if self.chance(0.6) else "open") for s in (-1, 1)}
        self.cross = []
        for _ in range(int(r.integers(0, 3))):
            zc = self.U(14, 70)
            self.cross.append((zc, zc + self.U(8, 14)))
        self.backdrop()
        self.street()
        for s in (-1, 1):
            self.roadside(s)
        self.traffic()
        self.people()
        for _, fn, args in sorted(self.objects, key=lambda o: -o[0]):
            fn(*args)
        if self.chance(self.st.hood):
            self.hood()
        return cv

    def edge(self, s):
        """Distance of the kerb from the camera on side s (parking lanes belong to the road side)."""
        return (self.rr if s > 0 else self.rl) + (2.2 if self.park[s] else 0.0)

    def in_cross(self, z0, z1):
        return any(z1 > a and z0 < b for a, b in self.cross)

    def backdrop(self):
        """Far buildings and trees closing the street at the horizon."""
        cv, r = self.cv, self.r
        x = -120.0
        while x < 120.0:
            w = self.U(8, 30)
            if self.chance(0.25):
                k = cv.add(_ID["vegetation"], _color(r, "green"), amp=0.15)
                cv.front(x, x + w, Z_FAR, 0, self.U(8, 22), k)
            elif self.chance(0.85):
                k = cv.add(_ID["building"], _color(r, "facade"), amp=0.04, tex=_TEX_WINDOWS,
                           tp=(3.0, 3.2, 0.5, 0.5), plane=_PLANE_FRONT, pc=Z_FAR)
                cv.front(x, x + w, Z_FAR, 0, self.U(14, 45), k)
            x += w
        k = cv.add(_ID["ground"], _color(r, "flat"), amp=0.06)  # whatever lies beyond the street
        cv.ground(-400, 400, self.z_bot * 0.999, Z_FAR, k)

    def street(self):
        cv, r = self.cv, self.r
        zb, zf = self.z_bot * 0.999, Z_FAR
        road_rgb = _color(r, "flat")
        for s in (-1, 1):  # sidewalks (with the yard/park strip behind them drawn in roadside())
            e = self.edge(s)
            k = cv.add(_ID["sidewalk"], _color(r, "flat"), amp=0.07)
            a, b = sorted((s * e, s * (e + self.sw[s] + 40)))
            cv.ground(a, b, zb, zf, k)
        road = cv.add(_ID["road"], road_rgb, amp=0.07)
        cv.ground(-self.rl, self.rr, zb, zf, road)
        for s in (-1, 1):
            if self.park[s]:
                k = cv.add(_ID["parking"], _color(r, "flat"), amp=0.07)
                a, b = sorted((s * (self.rr if s > 0 else self.rl), s * self.edge(s)))
                cv.ground(a, b, zb, zf, k)
        for a, b in self.cross:  # side streets, with sidewalks round the corners, zebra crossings before them
            cv.ground(-300, 300, a, b, road)
            for s in (-1, 1):
                k = cv.add(_ID["sidewalk"], _color(r, "flat"), amp=0.07)
                xa, xb = sorted((s * self.edge(s), s * 300))
                ws = self.U(2.5, 4.5)
                cv.ground(xa, xb, a, a + ws, k)
                cv.ground(xa, xb, b - ws, b, k)
            zebra = cv.add(_ID["road"], _jitter(r, (205, 205, 200), (0.85, 1.05), 5), amp=0.04)
            x = -self.rl
            while x < self.rr:
                cv.ground(x, x + 0.5, a - 4.0, a - 1.0, zebra)
                x += 1.0
        # kerbs: a light strip at the road edge, part of the sidewalk
        for s in (-1, 1):
            k = cv.add(_ID["sidewalk"], _jitter(r, (175, 172, 170), (0.85, 1.1), 6), amp=0.04)
            e = self.edge(s)
            z = zb
            for a, b in sorted(self.cross) + [(zf, zf)]:
                if a > z:
                    cv.ground(min(s * e, s * (e + 0.2)), max(s * e, s * (e + 0.2)), z, a, k)
                z = b
        # lane markings
        mark = cv.add(_ID["road"], _jitter(r, (215, 215, 210), (0.85, 1.05), 5), amp=0.04)
        lane = self.U(3.0, 3.6)
        x = self.rr - lane
        while x > -self.rl + 1.0:
            z = zb + self.U(0, 6)
            while z < 90:
                if not self.in_cross(z, z + 3):
                    cv.ground(x - 0.08, x + 0.08, z, z + 3.0, mark)
                z += 9.0
            x -= lane
        # a median or traffic island (ground) and tram rails (rail track), both void
        if self.chance(0.3):
            k = cv.add(_ID["ground"], _color(r, "flat"), amp=0.07)
            xm = -self.rl + self.U(2.5, 4.5)
            z0 = self.U(6, 25)
            cv.ground(xm, xm + self.U(0.8, 2.0), z0, z0 + self.U(8, 40), k)
        self.rail_x = None
        if self.rare["train"] or (not self.st.synthia_classes and self.chance(0.05)):
            self.rail_x = -self.rl + self.U(1.2, 2.5)
            k = cv.add(_ID["rail track"], _jitter(r, (95, 90, 85), (0.8, 1.2), 6), amp=0.1)
            cv.ground(self.rail_x - 0.9, self.rail_x + 0.9, zb, zf, k)

    def roadside(self, s):
        """Yards, buildings, walls, fences, trees, poles, signs and clutter on side s (-1 left, +1 right)."""
        cv, r, st = self.cv, self.r, self.st
        zb = self.z_bot
        e = self.edge(s)
        back = e + self.sw[s]  # back of the sidewalk
        kind = self.kind[s]
        terrain_id = _ID["vegetation"] if st.synthia_classes else _ID["terrain"]
        setback = 0.0
        if kind == "buildings" and self.chance(0.45):
            setback = self.U(1.5, 6)
        elif kind != "buildings":
            setback = self.U(3, 15)
        if setback > 0:  # yard / park strip between sidewalk and buildings
            lid = terrain_id if self.chance(0.65) else _ID["ground"]
            k = cv.add(lid, _color(r, "green" if lid != _ID["ground"] else "flat"), amp=0.16)
            a, b = sorted((s * back, s * (back + setback)))
            z = zb * 0.999
            for za, zc in sorted(self.cross) + [(Z_FAR, Z_FAR)]:
                if za > z:
                    cv.ground(a, b, z, za, k)
                z = zc
        if self.chance(0.3):  # a grass verge between kerb and footpath
            k = cv.add(terrain_id, _color(r, "green"), amp=0.16)
            a, b = sorted((s * (e + 0.3), s * (e + 0.3 + self.U(0.8, 2.0))))
            z = zb * 0.999
            for za, zc in sorted(self.cross) + [(Z_FAR, Z_FAR)]:
                if za > z:
                    cv.ground(a, b, z, za, k)
                z = zc
        xf = s * (back + setback)  # facade plane
        # buildings (or a park's distant trees) along the street
        z = self.U(0.3, 1.0) * zb
        first = True
        while z < Z_FAR * 0.8:
            L = self.U(8, 32)
            z1 = z + L
            for a, b in self.cross:
                if z < b and z1 > a:
                    if z < a:
                        z1 = a
                    else:
                        z, z1 = b, b + L
            if kind == "buildings":
                if not first and self.chance(0.12):  # a gap: shows a recessed building
                    self._facade(xf + s * self.U(6, 20), z, z1, self.U(6, 20), end_face=False)
                else:
                    self._facade(xf, z, z1, self.U(10, 34), end_face=not first)
            else:
                if self.chance(0.5):
                    self._facade(xf + s * self.U(10, 30), z, z1, self.U(6, 18), end_face=False)
                self.add_obj(z + L / 2, self._tree, (xf + s * self.U(1, 4), z + L / 2, self.U(1.3, 1.8)))
            first = False
            z = z1
        # low walls, fences and hedges at the back of the sidewalk
        z = zb
        while z < 90:
            z0 = z + self.U(0, 15)
            z1 = z0 + self.U(4, 20)
            if not self.in_cross(z0, z1):
                u = self.r.random()
                x = s * (back + 0.05)
                if u < 0.33:
                    self.add_obj(z1, self._wall, (x, z0, z1, self.U(1.0, 2.5)))
                elif u < 0.70:
                    self.add_obj(z1, self._fence, (x, z0, z1, self.U(1.2, 2.4)))
                elif u < 0.80:
                    self.add_obj(z1, self._hedge, (x, z0, z1, self.U(0.8, 1.6)))
            z = z1
        # guard rail along the road (void), rarely
        if self.chance(0.08):
            k = cv.add(_ID["guard rail"], _color(r, "metal"), amp=0.04)
            z0 = self.U(zb, 30)
            self.add_obj(z0 + 30, lambda x, a, b, q: cv.side(x, a, b, 0.3, 0.8, q), (s * (e + 0.3), z0, z0 + 30, k))
        # street trees, lamps and signs near the kerb
        p_tree = {"buildings": 0.6, "park": 0.85, "open": 0.6}[kind]
        if self.chance(p_tree):
            z = zb + self.U(0, 8)
            step = self.U(7, 14)
            while z < 80:
                if not self.in_cross(z - 2, z + 2):
                    self.add_obj(z, self._tree, (s * (e + self.U(0.8, 1.6)), z, self.U(0.8, 1.3)))
                z += step * self.U(0.8, 1.2)
        z = zb + self.U(0, 25)
        step = self.U(18, 35)
        while z < 110:
            if not self.in_cross(z - 1, z + 1):
                self.add_obj(z, self._lamp, (s * (e + 0.5), z))
            z += step
        for _ in range(int(self.r.poisson(1.4))):
            z = self.U(zb + 2, 45)
            self.add_obj(z, self._sign_post, (s * (e + self.U(0.3, 0.8)), z))
        for _ in range(int(self.r.poisson(2.6))):  # bins, boxes, benches, advertising columns: static
            z = self.U(zb, 40)
            self.add_obj(z, self._clutter, (s * (e + self.U(0.8, self.sw[s])), z))

    def _facade(self, x, z0, z1, height, end_face):
        cv, r = self.cv, self.r
        rgb = _color(r, "facade")
        tp = (self.U(2.5, 4.0), self.U(3.0, 3.6), self.U(0.35, 0.65), self.U(0.35, 0.6))
        k = cv.add(_ID["building"], rgb, amp=0.05, tex=_TEX_WINDOWS, tp=tp, plane=_PLANE_SIDE, pc=x)
        z0 = max(z0, 0.3)
        cv.side(x, z0, z1, 0, height, k)
        if end_face:  # the corner face towards a side street
            k2 = cv.add(_ID["building"], tuple(c * 0.85 for c in rgb), amp=0.05, tex=_TEX_WINDOWS, tp=tp,
                        plane=_PLANE_FRONT, pc=z0)
            s = 1 if x > 0 else -1
            a, b = sorted((x, x + s * 15))
            cv.front(a, b, z0, 0, height, k2)

    def add_obj(self, z, fn, args):
        self.objects.append((z, fn, args))

    # --- stuff objects ---
    def _wall(self, x, z0, z1, h):
        k = self.cv.add(_ID["wall"], _color(self.r, "facade"), amp=0.06)
        self.cv.side(x, z0, z1, 0, h, k)

    def _fence(self, x, z0, z1, h):
        k = self.cv.add(_ID["fence"], _color(self.r, "facade"), amp=0.05, tex=_TEX_BARS,
                        tp=(self.U(0.2, 0.5), 1.0, self.U(0.3, 0.6), 0.0), plane=_PLANE_SIDE, pc=x)
        self.cv.side(x, z0, z1, 0, h, k)

    def _hedge(self, x, z0, z1, h):
        k = self.cv.add(_ID["vegetation"], _color(self.r, "green"), amp=0.18)
        self.cv.side(x, z0, z1, 0, h, k)

    def _tree(self, x, z, scale):
        cv, r = self.cv, self.r
        q = cv.f / z
        k = cv.add(_ID["vegetation"], _color(r, "green"), amp=0.2)
        trunk = cv.add(_ID["vegetation"], _jitter(r, (80, 65, 50), (0.7, 1.2), 8), amp=0.1)
        h = self.U(5, 10) * scale
        cx = cv.px(x, z)
        cv.rect(cx - 0.15 * q, cv.py(h * 0.6, z), cx + 0.15 * q, cv.py(0, z), trunk)
        rx = self.U(1.5, 2.9) * scale * q
        cv.ellipse(cx, cv.py(h * 0.68, z), rx, rx * self.U(0.8, 1.15), k)

    def _lamp(self, x, z):
        cv, r = self.cv, self.r
        q = cv.f / z
        k = cv.add(_ID["pole"], _color(r, "metal"), amp=0.05)
        h = self.U(6, 9)
        cx = cv.px(x, z)
        cv.rect(cx - 0.075 * q, cv.py(h, z), cx + 0.075 * q, cv.py(0, z), k)
        d = -1 if x > 0 else 1  # the arm reaches over the road
        cv.rect(min(cx, cx + d * 1.4 * q), cv.py(h, z), max(cx, cx + d * 1.4 * q), cv.py(h - 0.12, z), k)

    def _sign_post(self, x, z, h=None, pole=True):
        cv, r = self.cv, self.r
        q = cv.f / z
        cx = cv.px(x, z)
        h = h or self.U(2.2, 3.2)
        if pole:
            kp = cv.add(_ID["pole"], _color(r, "metal"), amp=0.05)
            cv.rect(cx - 0.04 * q, cv.py(h, z), cx + 0.04 * q, cv.py(0, z), kp)
        for _ in range(1 + int(self.chance(0.3))):
            k = cv.add(_ID["traffic sign"], _color(r, "sign"), amp=0.04)
            w = self.U(0.55, 0.8)
            cy = cv.py(h, z) + w * 0.5 * q
            shape = r.integers(3)
            if shape == 0:
                cv.ellipse(cx, cy, w / 2 * q, w / 2 * q, k)
            elif shape == 1:
                cv.rect(cx - w / 2 * q, cy - w / 2 * q, cx + w / 2 * q, cy + w / 2 * q, k)
            else:
                cv.poly([(cx - w / 2 * q, cy - w / 2 * q), (cx + w / 2 * q, cy - w / 2 * q), (cx, cy + w / 2 * q)], k)
            h -= w * 1.05

    def _traffic_light(self, x, z, overhead):
        cv, r = self.cv, self.r
        q = cv.f / z
        cx = cv.px(x, z)
        kp = cv.add(_ID["pole"], _color(r, "metal"), amp=0.05)
        h = self.U(3.0, 3.8) if not overhead else self.U(5.0, 6.0)
        cv.rect(cx - 0.08 * q, cv.py(h + 0.3, z), cx + 0.08 * q, cv.py(0, z), kp)
        body = _color(r, "dark")
        boxes = [cx]
        if overhead:
            d = -1 if x > 0 else 1
            arm = self.U(3, 5)
            cv.rect(min(cx, cx + d * arm * q), cv.py(h + 0.3, z), max(cx, cx + d * arm * q), cv.py(h + 0.15, z), kp)
            boxes = [cx + d * arm * q * 0.5, cx + d * arm * q]
        for bx in boxes:
            k = cv.add(_ID["traffic light"], body, amp=0.05)
            cv.rect(bx - 0.2 * q, cv.py(h + 0.4, z), bx + 0.2 * q, cv.py(h - 0.65, z), k)
            lamp = cv.add(_ID["traffic light"], ((230, 40, 30), (240, 180, 30), (40, 210, 90))[r.integers(3)], amp=0.02)
            cv.ellipse(bx, cv.py(h - 0.12 - 0.28 * r.integers(3), z), 0.1 * q, 0.1 * q, lamp)
        if self.chance(0.35):
            self._sign_post(x, z, h=h - 0.9, pole=False)

    def _clutter(self, x, z):
        cv, r = self.cv, self.r
        k = cv.add(_ID["static"], _color(r, "any"), amp=0.08)
        w, h = (self.U(1.0, 1.4), self.U(2.2, 2.8)) if self.chance(0.2) else (self.U(0.4, 1.0), self.U(0.6, 1.4))
        cv.box(x - w / 2, x + w / 2, 0, h, z, z + self.U(0.5, 1.5), k, k)

    # --- traffic ---
    def traffic(self):
        st, r = self.st, self.r
        zb = self.z_bot
        if self.cross:  # traffic lights at the intersections
            for a, b in self.cross:
                for s in (-1, 1):
                    if self.chance(0.8):
                        self.add_obj(a - 1, self._traffic_light, (s * (self.edge(s) + 0.4), a - 1, self.chance(0.5)))
        elif self.chance(0.6):  # a pedestrian light without a side street
            s = 1 if self.chance(0.6) else -1
            z = self.U(zb + 5, 45)
            self.add_obj(z, self._traffic_light, (s * (self.edge(s) + 0.4), z, False))
        lanes = self._lanes()
        n = int(r.poisson(1.5 * st.car_rate))
        for _ in range(n):  # moving cars
            x, oncoming = lanes[r.integers(len(lanes))]
            z = self.U(zb * 1.2, 70)
            self.add_obj(z, self._car, (x, z, oncoming))
        for s in (-1, 1):  # parked cars
            if self.park[s]:
                xc = s * ((self.rr if s > 0 else self.rl) + 1.1)
                z = zb * self.U(0.8, 1.4)
                while z < 70:
                    if self.chance(0.75 * min(1.0, st.car_rate)) and not self.in_cross(z, z + 5):
                        self.add_obj(z, self._car, (xc, z, False))
                    z += self.U(5.5, 9.0)
        vs = st.vehicle_scale
        if self.rare["truck"]:
            x, onc = lanes[r.integers(len(lanes))]
            z = self.U(15, 36)
            self.add_obj(z, self._truck, (x, z, onc, vs))
        if self.rare["bus"]:
            x, onc = lanes[r.integers(len(lanes))]
            z = self.U(13, 36)
            self.add_obj(z, self._bus, (x, z, onc, vs))
        if self.rare["train"]:
            z = self.U(15, 40)
            self.add_obj(z, self._train, (self.rail_x, z, vs))
        if self.rare["motorcycle"]:
            x, onc = lanes[r.integers(len(lanes))]
            z = self.U(zb * 1.2, 18)
            self.add_obj(z, self._two_wheeler, (x + self.U(-0.8, 0.8), z, True, self.chance(0.85)))
        for _ in range(int(r.poisson(0.55))):  # cyclists on the road edge
            s = 1 if self.chance(0.7) else -1
            x = s * ((self.rr if s > 0 else self.rl) - 0.8)
            z = self.U(zb * 1.2, 40)
            self.add_obj(z, self._two_wheeler, (x, z, False, True))
        for _ in range(int(r.poisson(0.7))):  # parked bicycles on the sidewalk
            s = 1 if self.chance(0.5) else -1
            z = self.U(zb, 35)
            self.add_obj(z, self._two_wheeler, (s * (self.edge(s) + self.U(0.5, 1.5)), z, False, False))
        if self.chance(0.08):  # a trailer or cart: dynamic (void)
            x, onc = lanes[r.integers(len(lanes))]
            z = self.U(zb * 1.5, 40)
            k = self.cv.add(_ID["dynamic"], _color(r, "any"), amp=0.06)
            self.add_obj(z, self.cv.box, (x - 1.0, x + 1.0, 0.2, self.U(1.0, 2.2), z, z + 3, k, k, k))

    def _lanes(self):
        """Lane centres (x, oncoming): ours on the right, oncoming ones on the left."""
        lanes = []
        x = self.rr - 1.6
        while x > -self.rl + 1.0:
            lanes.append((x, x < -1.0))
            x -= 3.3
        return lanes or [(0.0, False)]

    def _vehicle_faces(self, lid, rgb, thing, glass=True):
        cv = self.cv
        front = cv.add(lid, rgb, amp=0.04, thing=thing)
        side = cv.add(lid, tuple(c * 0.8 for c in rgb), amp=0.04, thing=thing)
        top = cv.add(lid, tuple(min(255, c * 1.1) for c in rgb), amp=0.04, thing=thing)
        g = cv.add(lid, _color(self.r, "glass"), amp=0.03, thing=thing) if glass else None
        return front, side, top, g

    def _wheels(self, lid, x0, x1, z0, z1, thing, r_w=0.33):
        cv = self.cv
        k = cv.add(lid, _color(self.r, "dark"), amp=0.03, thing=thing)
        xs = x1 if x1 < 0 else x0 if x0 > 0 else None
        if xs is not None:
            for zc in (z0 + 0.18 * (z1 - z0), z1 - 0.18 * (z1 - z0)):
                q = cv.f / zc
                # a wheel in the plane x = xs is foreshortened by |xs| / z (a little more shown, it has width)
                cv.ellipse(cv.px(xs, zc), cv.py(r_w, zc), r_w * q * max(abs(xs) / zc, 0.3), r_w * q, k)
        q = cv.f / z0
        for xw in (x0 + 0.15, x1 - 0.15):
            cv.rect(cv.px(xw - 0.12, z0), cv.py(2 * r_w * 0.75, z0), cv.px(xw + 0.12, z0), cv.py(0, z0), k)

    def _car(self, x, z, oncoming):
        cv, r = self.cv, self.r
        s = self.st.vehicle_scale
        L, Wd, Hh = self.U(3.9, 4.8) * s, self.U(1.65, 1.9) * s, self.U(1.35, 1.6) * s
        thing = cv.new_thing()
        f, sd, tp, g = self._vehicle_faces(_ID["car"], _color(r, "vehicle"), thing)
        x0, x1 = x - Wd / 2, x + Wd / 2
        hb = Hh * 0.58
        self._wheels(_ID["car"], x0, x1, z, z + L, thing)
        cv.box(x0, x1, 0.25, hb, z, z + L, f, sd, tp)
        # the cabin: glass all round, a little narrower, over the middle of the body
        c0, c1 = z + L * (0.3 if oncoming else 0.2), z + L * (0.8 if oncoming else 0.72)
        cv.box(x0 + 0.12, x1 - 0.12, hb, Hh, c0, c1, g, g, tp)

    def _truck(self, x, z, oncoming, s):
        cv, r = self.cv, self.r
        thing = cv.new_thing()
        Wd, L, Hh = 2.45 * s, self.U(7, 10) * s, self.U(3.2, 3.9) * s
        f, sd, tp, g = self._vehicle_faces(_ID["truck"], _color(r, "vehicle"), thing)
        cargo = cv.add(_ID["truck"], _color(r, "vehicle"), amp=0.04, tex=_TEX_BARS, tp=(0.5, 1, 0.15, 0),
                       plane=_PLANE_SIDE, pc=x + (Wd / 2 if x < 0 else -Wd / 2), thing=thing)
        x0, x1 = x - Wd / 2, x + Wd / 2
        cab = 2.3 * s
        self._wheels(_ID["truck"], x0, x1, z, z + L, thing, 0.5)
        if oncoming:  # cab towards us
            cv.box(x0 + 0.05, x1 - 0.05, 0.5, Hh, z + cab, z + L, cargo, cargo, tp)
            cv.box(x0, x1, 0.5, 2.9 * s, z, z + cab, f, sd, tp)
            cv.front(x0 + 0.15, x1 - 0.15, z, 1.7 * s, 2.6 * s, g)
        else:  # the cargo box from behind
            cv.box(x0, x1, 0.5, 2.9 * s, z + L - cab, z + L, f, sd, tp)
            cv.box(x0, x1, 0.5, Hh, z, z + L - cab, cargo, cargo, tp)

    def _bus(self, x, z, oncoming, s):
        cv, r = self.cv, self.r
        thing = cv.new_thing()
        Wd, L, Hh = 2.55 * s, self.U(11, 13) * s, self.U(3.0, 3.3) * s
        rgb = _color(r, "vehicle")
        glass = _color(r, "glass")
        x0, x1 = x - Wd / 2, x + Wd / 2
        xs = x1 if x1 < 0 else x0
        f = cv.add(_ID["bus"], rgb, amp=0.04, thing=thing)
        sd = cv.add(_ID["bus"], tuple(c * 0.8 for c in rgb), amp=0.04, tex=_TEX_BAND,
                    tp=(1.3 * s, 1.2 * s, 0.85, 2.5 * s), plane=_PLANE_SIDE, pc=xs, thing=thing)
        tp = cv.add(_ID["bus"], rgb, amp=0.04, thing=thing)
        g = cv.add(_ID["bus"], glass, amp=0.03, thing=thing)
        self._wheels(_ID["bus"], x0, x1, z, z + L, thing, 0.5)
        cv.box(x0, x1, 0.3, Hh, z, z + L, f, sd, tp)
        cv.front(x0 + 0.12, x1 - 0.12, z, (1.0 if oncoming else 1.6) * s, Hh - 0.25 * s, g)

    def _train(self, x, z, s):
        cv, r = self.cv, self.r
        thing = cv.new_thing()
        Wd, L, Hh = 2.65 * s, self.U(22, 34), 3.4 * s
        rgb = _color(r, "vehicle")
        x0, x1 = x - Wd / 2, x + Wd / 2
        xs = x1 if x1 < 0 else x0
        f = cv.add(_ID["train"], rgb, amp=0.04, thing=thing)
        sd = cv.add(_ID["train"], tuple(c * 0.8 for c in rgb), amp=0.04, tex=_TEX_BAND,
                    tp=(1.6, 1.0 * s, 0.75, 2.6 * s), plane=_PLANE_SIDE, pc=xs, thing=thing)
        tp = cv.add(_ID["train"], rgb, amp=0.04, thing=thing)
        g = cv.add(_ID["train"], _color(r, "glass"), amp=0.03, thing=thing)
        cv.box(x0, x1, 0.2, Hh, z, z + L, f, sd, tp)
        cv.front(x0 + 0.2, x1 - 0.2, z, 1.5 * s, Hh - 0.3 * s, g)
        q = cv.f / (z + 4)  # pantograph
        cx = cv.px(x, z + 4)
        cv.poly([(cx - 0.6 * q, cv.py(Hh, z + 4)), (cx, cv.py(Hh + 1.2, z + 4)), (cx + 0.05 * q, cv.py(Hh + 1.2, z + 4)),
                 (cx + 0.6 * q, cv.py(Hh, z + 4))], f)

    def _two_wheeler(self, x, z, motor, ridden):
        """A bicycle or motorcycle seen from the side (crossing) or from behind, with its rider."""
        cv, r = self.cv, self.r
        thing = cv.new_thing()
        lid = _ID["motorcycle"] if motor else _ID["bicycle"]
        q = cv.f / z
        cx, gy = cv.px(x, z), cv.py(0, z)
        frame = cv.add(lid, _color(r, "vehicle" if motor else "metal"), amp=0.04, thing=thing)
        tyre = cv.add(lid, _color(r, "dark"), amp=0.03, thing=thing)
        rw = (0.32 if motor else 0.34) * q
        sideways = self.chance(0.5 if ridden else 0.8)
        if sideways:
            half = (0.7 if motor else 0.55) * q
            for wx in (cx - half, cx + half):
                cv.ellipse(wx, gy - rw, rw, rw, tyre)
            if motor:
                cv.poly([(cx - half, gy - rw * 1.2), (cx - 0.2 * q, gy - 1.0 * q), (cx + half * 0.9, gy - 0.95 * q),
                         (cx + half, gy - rw)], frame)
            else:
                cv.poly([(cx - half, gy - rw), (cx - 0.1 * q, gy - 0.85 * q), (cx + half * 0.8, gy - 0.9 * q),
                         (cx + half, gy - rw), (cx, gy - rw * 0.9)], frame)
        else:
            ww = (0.12 if motor else 0.05) * q
            cv.rect(cx - ww, gy - 2 * rw, cx + ww, gy, tyre)
            bw = (0.35 if motor else 0.15) * q
            cv.rect(cx - bw, gy - 0.95 * q, cx + bw, gy - rw * 0.8, frame)
            cv.rect(cx - 0.32 * q, gy - 1.05 * q, cx + 0.32 * q, gy - 0.98 * q, frame)  # handlebar
        if ridden:
            self._human(x, z, _ID["rider"], base=0.78, thing=thing, seated=True)

    # --- people ---
    def people(self):
        zb = self.z_bot
        n = int(self.r.poisson(9.0 * self.st.person_rate))
        for _ in range(n):
            s = 1 if self.chance(0.55) else -1
            if self.cross and self.chance(0.2):  # crossing the street
                a, _b = self.cross[self.r.integers(len(self.cross))]
                x, z = self.U(-self.rl, self.rr), a - self.U(1, 4)
            else:
                x, z = s * (self.edge(s) + self.U(0.5, self.sw[s])), self.U(zb * 1.05, 30)
            self.add_obj(z, self._human, (x, z, _ID["person"]))
            if self.chance(0.04):  # a pram or a trolley: dynamic
                k = self.cv.add(_ID["dynamic"], _color(self.r, "any"), amp=0.06)
                self.add_obj(z - 0.5, self.cv.box, (x + 0.3, x + 0.9, 0.1, 1.0, z - 0.5, z + 0.3, k, k, k))

    def _human(self, x, z, lid, base=0.0, thing=0, seated=False):
        cv, r = self.cv, self.r
        thing = thing or cv.new_thing()
        q = cv.f / z
        h = self.U(1.55, 1.9)
        cx, gy = cv.px(x, z), cv.py(base, z)
        legs = cv.add(lid, _color(r, "cloth"), amp=0.05, thing=thing)
        torso = cv.add(lid, _color(r, "cloth"), amp=0.05, thing=thing)
        head = cv.add(lid, _color(r, "skin"), amp=0.04, thing=thing)
        if seated:  # torso above the saddle, one leg down to the pedal
            hip = gy
            cv.rect(cx - 0.08 * q, hip, cx + 0.06 * q, hip + 0.45 * q, legs)
            cv.poly([(cx - 0.2 * q, hip), (cx + 0.18 * q, hip), (cx + 0.12 * q, hip - 0.62 * q), (cx - 0.18 * q, hip - 0.6 * q)], torso)
            top = hip - 0.62 * q
        else:
            hip = gy - 0.48 * h * q
            stride = self.U(0.0, 0.12) * q
            cv.poly([(cx - 0.17 * q, hip), (cx - 0.01 * q, hip), (cx - 0.02 * q - stride, gy), (cx - 0.16 * q - stride, gy)], legs)
            cv.poly([(cx + 0.01 * q, hip), (cx + 0.17 * q, hip), (cx + 0.16 * q + stride, gy), (cx + 0.02 * q + stride, gy)], legs)
            top = gy - 0.84 * h * q
            cv.poly([(cx - 0.22 * q, top), (cx + 0.22 * q, top), (cx + 0.19 * q, hip + 0.02 * q), (cx - 0.19 * q, hip + 0.02 * q)], torso)
            if self.chance(0.3):  # a bag
                cv.rect(cx + 0.2 * q, top + 0.25 * q, cx + 0.34 * q, hip, torso)
        cv.ellipse(cx, top - 0.12 * q, 0.1 * q, 0.125 * q, head)

    def hood(self):
        """The ego vehicle's bonnet: a curved band at the bottom (label id 1, void)."""
        cv = self.cv
        k = cv.add(_ID["ego vehicle"], _jitter(self.r, (40, 40, 45), (0.7, 1.3), 5), amp=0.03)
        H, W = cv.H, cv.W
        h = H * self.U(0.085, 0.10)
        pts = [(0, H)]
        for t in np.linspace(0, 1, 9):
            pts.append((t * W, H - h * (1 - 0.45 * (2 * t - 1) ** 2)))
        pts.append((W, H))
        cv.poly(pts, k)  # convex: the top edge is a parabola opening downwards in image rows


# --- rendering ---------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _noise_bank(bh: int, bw: int) -> np.ndarray:
    """A fixed field of standard-normal noise; images take windows of it at random offsets (drawing fresh
    normals for every pixel was a third of the rendering time)."""
    return np.random.default_rng(20230617).standard_normal((bh, bw, 3), dtype=np.float32)


def _noise(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    bh, bw = min(2 * H, 1024), min(2 * W, 2048)
    bank = _noise_bank(bh, bw)
    oy, ox = int(rng.integers(bh)), int(rng.integers(bw))
    if oy + H <= bh and ox + W <= bw:
        return bank[oy:oy + H, ox:ox + W]
    return bank[((oy + np.arange(H)) % bh)[:, None], ((ox + np.arange(W)) % bw)[None, :]]


def _blur(radius: float):
    """A Gaussian blur of the given radius (sigma, pixels); 3x3 kernel below one pixel (PIL's
    GaussianBlur is three times slower there)."""
    if radius >= 0.9:
        return ImageFilter.GaussianBlur(radius)
    w = math.exp(-0.5 / (radius * radius))
    row = (w, 1.0, w)
    return ImageFilter.Kernel((3, 3), [a * b for a in row for b in row])


def _paint(cv: _Canvas, st: _Style, rng: np.random.Generator) -> np.ndarray:
    """RGB image (H x W x 3 uint8) from the instance map: colours, textures, lighting, blur, noise."""
    H, W = cv.H, cv.W
    inst = np.asarray(cv.im, dtype=np.int32)
    table = np.asarray(cv.rgb, dtype=np.float32)
    if st.saturation != 1.0:
        gray = table.mean(axis=1, keepdims=True)
        table = gray + (table - gray) * st.saturation
    img = table[inst]  # H x W x 3
    # plane textures: windows on facades, bars on fences and cargo boxes, a band of windows on buses/trains
    tex = np.asarray(cv.tex, dtype=np.int8)[inst]
    sel = tex > 0
    if sel.any():
        ii, jj = np.nonzero(sel)
        k = inst[ii, jj]
        t = tex[ii, jj]
        tp = np.asarray(cv.tp, dtype=np.float32)[k]
        plane = np.asarray(cv.plane, dtype=np.int8)[k]
        pc = np.asarray(cv.pc, dtype=np.float32)[k]
        du = jj.astype(np.float32) + 0.5 - cv.vp
        dv = ii.astype(np.float32) + 0.5 - cv.hor
        du = np.where(np.abs(du) < 1e-3, 1e-3, du)
        z = np.where(plane == _PLANE_SIDE, cv.f * pc / du, pc)
        a = np.where(plane == _PLANE_SIDE, z, du * pc / cv.f)
        y = cv.cam_h - dv * z / cv.f
        fa = (a / tp[:, 0]) % 1.0
        fy = (y / tp[:, 1]) % 1.0
        win = (t == _TEX_WINDOWS) & (fa < tp[:, 2]) & (fy > 0.3) & (fy < 0.3 + tp[:, 3]) & (y > 1.0)
        bar = (t == _TEX_BARS) & (fa < tp[:, 2])
        band = (t == _TEX_BAND) & (fa < tp[:, 2]) & (y > tp[:, 1]) & (y < tp[:, 3])
        px = img[ii, jj]
        px[win | band] = px[win | band] * 0.25 + np.float32([25, 30, 40])
        px[bar] *= 0.6
        img[ii, jj] = px
    # texture: low-frequency blotches and per-pixel colour noise, scaled by the instance's amplitude
    amp = np.asarray(cv.amp, dtype=np.float32)[inst] * st.texture
    if st.texture > 0.3:
        lf = rng.standard_normal((H // 8 + 2, W // 8 + 2), dtype=np.float32)
        lf = np.asarray(Image.fromarray(lf, mode="F").resize((W, H), Image.BILINEAR))
        img *= (1.0 + amp * lf * 0.8)[..., None]
    n3 = _noise(rng, H, W)
    img += n3 * (amp * 0.9)[..., None] * img + n3.mean(axis=2, keepdims=True) * amp[..., None] * img
    # lighting: exposure and a vertical gradient
    g = rng.uniform(-1, 1) * st.gradient
    ramp = 1.0 + g * (0.5 - (np.arange(H, dtype=np.float32) + 0.5) / H)
    img *= (ramp * rng.uniform(0.85, 1.12))[:, None, None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    if st.blur > 0:
        img = np.asarray(Image.fromarray(img).filter(_blur(max(0.5, st.blur * W / 256))))
    if st.noise > 0:
        img = np.clip(img + _noise(rng, H, W) * st.noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


# --- public API ------------------------------------------------------------------------------------

def _check_hw(H: int, W: int, what: str) -> tuple[int, int]:
    if H < MIN_SIZE[0] or W < MIN_SIZE[1]:
        raise ConfigError(f"{what} is too small; need at least {MIN_SIZE[0]}x{MIN_SIZE[1]} (H >= {MIN_SIZE[0]}, "
                          f"W >= {MIN_SIZE[1]})")
    if H > MAX_SIDE or W > MAX_SIDE or H * W > MAX_PIXELS:
        raise ConfigError(f"{what} is too large; toycity draws at most {MAX_PIXELS} pixels per image "
                          f"({MAX_SIDE} per side), e.g. 1024x2048 (Cityscapes' size) or 2048x4096")
    return H, W


def _check(style: str, size, index: int | None = None, seed: int | None = None) -> tuple[int, int]:
    if style not in _STYLE:
        raise ConfigError(f"unknown toycity style {style!r}; expected one of {', '.join(STYLES)}")
    try:
        if isinstance(size, (str, bytes)):
            raise TypeError
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"toycity size must be a pair (H, W) of integers, got {size!r}") from None
    _check_hw(H, W, f"toycity size {H}x{W}")
    if index is not None and index < 0:
        raise ConfigError(f"toycity image index must be >= 0, got {index}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ConfigError(f"toycity seed must be an integer >= 0, got {seed!r}")
    return H, W


def _check_counts(n_train, n_val) -> None:
    for name, n in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {n!r}")
    if n_train + n_val == 0:
        raise ConfigError(f"nothing to write: n_train={n_train} and n_val={n_val}; ask for at least one image "
                          "(e.g. --n-train 200 --n-val 60)")


def render_full(style: str, index: int, seed: int = 0, size: tuple[int, int] = (128, 256)):
    """-> (image uint8 HxWx3, label ids uint8 HxW (Cityscapes ids, void ids kept), instance ids uint16 HxW).

    Instance ids number the *thing* objects (person, rider, vehicles) of the image from 1; 0 elsewhere.
    """
    H, W = _check(style, size, index, seed)
    scene = _Scene(style, int(index), int(seed), (H, W))
    cv = scene.build()
    inst = np.asarray(cv.im, dtype=np.int32)
    label_ids = np.asarray(cv.lid, dtype=np.uint8)[inst]
    things = np.asarray(cv.thing, dtype=np.uint16)[inst]
    image = _paint(cv, scene.st, scene.r)
    return image, label_ids, things


def render_label_ids(style: str, index: int, seed: int = 0, size: tuple[int, int] = (128, 256)):
    """-> (image uint8 HxWx3, Cityscapes label ids uint8 HxW, void ids kept)."""
    image, label_ids, _ = render_full(style, index, seed, size)
    return image, label_ids


def render(style: str, index: int, seed: int = 0, size: tuple[int, int] = (128, 256)) -> tuple[np.ndarray, np.ndarray]:
    """-> (image uint8 HxWx3, train ids uint8 HxW with 255 = ignore)."""
    image, label_ids, _ = render_full(style, index, seed, size)
    return image, C.label_id_to_train_id(label_ids)


def parse_size(text: str) -> tuple[int, int]:
    """``"128x256"`` -> ``(128, 256)``."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        H, W = int(parts[0].strip()), int(parts[1].strip())
    except ValueError:
        raise ConfigError(f"bad image size {text!r}; expected HEIGHTxWIDTH, e.g. 128x256") from None
    return _check_hw(H, W, f"image size {text!r}")


def write_png16(path, array) -> None:
    """Write an HxWxC uint16 array (C = 1, 3 or 4, channels in RGB(A) order) as a 16-bit PNG, with OpenCV
    (Pillow cannot write 16-bit RGB). The file's first channel is ``array[..., 0]``."""
    import cv2

    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"write_png16 needs an HxWxC uint16 array with C in 1, 3, 4, got {a.dtype} {a.shape}")
    order = {1: [0], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[a.shape[2]]  # OpenCV orders colour channels BGR(A)
    bgr = a[:, :, order] if a.shape[2] > 1 else a[:, :, 0]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise OSError(f"OpenCV could not encode {path} as PNG")
    Path(path).write_bytes(data.tobytes())


def _palette() -> list[int]:
    pal = [0] * 768
    for lab in C.LABELS:
        pal[3 * lab.id: 3 * lab.id + 3] = lab.color
    return pal


def _cityscapes_names(n: int, cities: tuple[str, ...]) -> list[tuple[str, str]]:
    """(city, file stem) for n images: runs of consecutive images per city, stems like the real ones
    (``aachen_000003_000019``: sequence number, then frame 19, the annotated frame of each snippet)."""
    per_city = max(4, math.ceil(n / len(cities)))
    names = []
    for i in range(n):
        c = min(i // per_city, len(cities) - 1)
        names.append((cities[c], f"{cities[c]}_{i - c * per_city:06d}_000019"))
    return names


def _progress(total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def write_tree(out, style: str, n_train: int, n_val: int, size=(128, 256), seed: int = 0, progress: bool = True) -> Path:
    """Write ``n_train + n_val`` images of a style in the real data set's layout and encoding; returns ``out``.

    * cityscapes: ``leftImg8bit/{train,val}/<city>/<city>_<seq>_000019_leftImg8bit.png`` and
      ``gtFine/{train,val}/<city>/..._gtFine_labelIds.png`` (8-bit label ids).
    * gta: ``images/NNNNN.png`` and ``labels/NNNNN.png`` (palette PNG, index = label id), from 00001.
    * synthia: ``RGB/NNNNNNN.png`` and ``GT/LABELS/NNNNNNN.png`` (16-bit, 3 channels: SYNTHIA class id,
      instance id, 0), from 0000000.

    gta and synthia are written as one numbered sequence (train first); cityscapes val images are image
    indices ``n_train ..``, so no val image repeats a train image.

    The tree is written into a new folder beside ``out`` and renamed to ``out`` when complete, so
    ``out`` never holds a half-written tree or images of two generations: an older toycity tree there
    (a folder with ``toycity.json``) is replaced as a whole, an empty folder is used, and a folder
    holding anything else, or a file, is refused before any image is drawn (:class:`ConfigError`).
    """
    H, W = _check(style, size, seed=seed)
    _check_counts(n_train, n_val)
    return write_atomically(out, lambda tmp: _write_into(tmp, style, n_train, n_val, (H, W), seed, progress))


def write_atomically(out, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` into a new folder beside ``out``, then rename it to ``out`` (the rules of
    :func:`write_tree`; also used by :mod:`blvnb.data.toycity_layouts`)."""
    out = _check_out(Path(out).expanduser())
    tmp = _temp_beside(out)
    try:
        write(tmp)
        _replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_out(out: Path) -> Path:
    """``out`` if toycity may write there (see :func:`write_tree`), else a ConfigError naming it."""
    if out.is_symlink() and out.is_dir():
        out = out.resolve()  # replace the folder the link points at, not the link
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a folder; give a new or empty folder "
                              "(or one that holds an older toycity tree, which is replaced)")
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as e:
            raise ConfigError(f"cannot read the folder --out {out}: {e}") from None
        if entries and "toycity.json" not in entries:
            raise ConfigError(f"--out {out} is not empty and holds no toycity tree (no toycity.json; it has "
                              f"{', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''}); toycity replaces only "
                              "an older toycity tree. Give a new or empty folder.")
    return out


def _temp_beside(out: Path) -> Path:
    """A new empty folder next to ``out`` (same file system, so that a rename moves it into place)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise ConfigError(f"cannot write toycity to {out}: {e.strerror or e} ({e.filename or out.parent}); "
                          "give --out a folder in a writable place") from None


def _replace(tmp: Path, out: Path) -> None:
    """Move the complete tree ``tmp`` to ``out``: an empty ``out`` is removed first, an older toycity tree
    is moved aside, replaced, then deleted (restored if the second rename fails)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    log.info("replaced the older toycity tree in %s", out)


def _write_into(out: Path, style: str, n_train: int, n_val: int, size, seed: int, progress: bool) -> Path:
    """Write the tree into the (new, empty) folder ``out``."""
    H, W = size
    total = n_train + n_val
    bar = _progress(total, f"toycity {style} {H}x{W}", progress)
    log.info("writing %d toycity %s images (%dx%d, seed %d) to %s", total, style, H, W, seed, out)
    if style == "cityscapes":
        jobs = [("train", i, name) for i, name in enumerate(_cityscapes_names(n_train, CITYSCAPES_TRAIN_CITIES))]
        jobs += [("val", n_train + j, name) for j, name in enumerate(_cityscapes_names(n_val, CITYSCAPES_VAL_CITIES))]
        for split, index, (city, stem) in jobs:
            img_dir = out / "leftImg8bit" / split / city
            lab_dir = out / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            lab_dir.mkdir(parents=True, exist_ok=True)
            image, label_ids, _ = render_full(style, index, seed, (H, W))
            Image.fromarray(image, "RGB").save(img_dir / f"{stem}_leftImg8bit.png", compress_level=1)
            Image.fromarray(label_ids, "L").save(lab_dir / f"{stem}_gtFine_labelIds.png", compress_level=1)
            if bar is not None:
                bar.update(1)
    elif style == "gta":
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "labels").mkdir(parents=True, exist_ok=True)
        pal = _palette()
        for index in range(total):
            image, label_ids, _ = render_full(style, index, seed, (H, W))
            name = f"{index + 1:05d}.png"
            Image.fromarray(image, "RGB").save(out / "images" / name, compress_level=1)
            lab = Image.fromarray(label_ids, "L").convert("P")
            lab.putpalette(pal)
            lab.save(out / "labels" / name, compress_level=1)
            if bar is not None:
                bar.update(1)
    else:
        (out / "RGB").mkdir(parents=True, exist_ok=True)
        (out / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
        for index in range(total):
            image, label_ids, things = render_full(style, index, seed, (H, W))
            name = f"{index:07d}.png"
            Image.fromarray(image, "RGB").save(out / "RGB" / name, compress_level=1)
            gt = np.zeros((H, W, 3), dtype=np.uint16)
            gt[:, :, 0] = C.train_id_to_synthia_id(C.label_id_to_train_id(label_ids))
            gt[:, :, 1] = things
            write_png16(out / "GT" / "LABELS" / name, gt)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    manifest = {"generator": "blvnb.data.toycity", "version": GENERATOR_VERSION, "style": style,
                "size": [H, W], "n_train": n_train, "n_val": n_val, "seed": seed}
    (out / "toycity.json").write_text(json.dumps(manifest, indent=1))
    return out


def cache_key(style: str, n_train: int, n_val: int, size=(128, 256), seed: int = 0) -> str:
    H, W = _check(style, size)
    return f"{style}-{H}x{W}-n{n_train}+{n_val}-s{seed}-v{GENERATOR_VERSION}"


def ensure(style: str, n_train: int, n_val: int, size=(128, 256), seed: int = 0, cache_dir=None, progress: bool = True) -> Path:
    """Generate a tree once and reuse it: ``<cache>/toycity/<style>-<H>x<W>-n<n_train>+<n_val>-s<seed>-v<version>``.

    ``cache_dir`` defaults to ``$BLVNB_CACHE`` or ``~/.cache/blvnb``. The tree is written to a temporary
    directory next to its final place and renamed when complete, so an interrupted run never leaves a
    half tree under the final name.
    """
    H, W = _check(style, size, seed=seed)
    _check_counts(n_train, n_val)
    return cached(cache_key(style, n_train, n_val, size, seed),
                  lambda tmp: _write_into(tmp, style, n_train, n_val, (H, W), seed, progress), cache_dir)


def cached(name: str, write: Callable[[Path], object], cache_dir=None) -> Path:
    """``<cache>/toycity/<name>``, written once by ``write(tmp)`` into a temporary folder beside it and
    renamed into place (a lost race with another process is fine: its complete tree is used)."""
    root = Path(cache_dir or os.environ.get("BLVNB_CACHE") or Path.home() / ".cache" / "blvnb").expanduser()
    final = root / "toycity" / name
    if final.is_dir():
        log.debug("toycity cache hit: %s", final)
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as e:
        raise ConfigError(f"cannot write the toycity cache under {final.parent}: {e.strerror or e}; set "
                          "BLVNB_CACHE to a writable folder") from None
    try:
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another process: a real failure
                raise
            log.debug("toycity tree %s was completed by another process", final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
