"""Scenes for the synthetic stand-ins: class appearance from the class NAME, and scene rendering.

A class's look is a deterministic function of its display name (sha256 of the name): a
named colour (slightly shifted per name) and, for things, a shape (disc, square,
triangle, diamond) or, for stuff, a texture (solid, stripes, checker, dots). So "car" looks
the same in the COCO stand-in (training) and in the ADE/Mapillary stand-ins (evaluation),
and a class the training set never shows has a look the model never saw.

`render_scene` paints one image: one or two stuff regions (top/bottom), a few thing
instances (later ones occlude earlier ones), optionally a crowd cluster and a void patch.
It returns the image and a segment-id map with the segments' classes, from which the
writers derive every on-disk format. Pure numpy, seeded by the caller's Generator.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# Named colours: expressions ("the red disc") use the name; the class colour is shifted a
# little from it (per name) so two classes with the same colour name still differ.
COLOURS = {
    "red": (215, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 215), "yellow": (230, 210, 40),
    "orange": (240, 140, 30), "purple": (140, 60, 190), "cyan": (40, 200, 210), "pink": (240, 120, 190),
    "brown": (130, 85, 40), "white": (240, 240, 240), "black": (25, 25, 25),
}
SHAPES = ("disc", "square", "triangle", "diamond")
TEXTURES = ("solid", "horizontal stripes", "vertical stripes", "checker", "dots")
VOID_GREY = (128, 128, 128)


@dataclass(frozen=True)
class Appearance:
    colour_name: str
    colour: tuple[int, int, int]
    shape: str       # how it looks as a thing
    texture: str     # how it looks as stuff
    colour2: tuple[int, int, int]  # texture's second colour

    def key(self, thing: bool) -> tuple:
        return (self.colour_name, self.shape if thing else self.texture)


def _digest(name: str) -> bytes:
    return hashlib.sha256(name.strip().lower().encode("utf-8")).digest()


def appearance(name: str) -> Appearance:
    """The look of class `name` (a pure function of the name)."""
    d = _digest(name)
    cname = list(COLOURS)[d[0] % len(COLOURS)]
    base = np.array(COLOURS[cname], dtype=np.int64)
    shift = (np.frombuffer(d[1:4], dtype=np.uint8).astype(np.int64) % 31) - 15
    colour = tuple(int(c) for c in np.clip(base + shift, 0, 255))
    colour2 = tuple(int(c) for c in np.clip(np.array(colour) * 0.55 + 20, 0, 255))
    return Appearance(cname, colour, SHAPES[d[4] % len(SHAPES)], TEXTURES[d[5] % len(TEXTURES)], colour2)


def name_hash(name: str) -> int:
    """A stable integer from a name (orders candidate classes reproducibly)."""
    return int.from_bytes(_digest(name)[8:16], "big")


@dataclass(frozen=True)
class SceneClass:
    index: int       # contiguous class index in the dataset
    name: str        # display name (appearance key)
    thing: bool      # drawn as instances (shape) or as a region (texture)


@dataclass
class Segment:
    id: int
    cls: SceneClass
    iscrowd: bool = False
    # For referring expressions: centre x (0..1) and size in pixels of the drawn shape.
    cx: float = 0.0
    radius: int = 0


def shape_mask(shape: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean (h,w) mask of a shape centred at (cy, cx) with half-size r."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    if shape == "disc":
        return dy ** 2 + dx ** 2 <= r ** 2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    if shape == "triangle":  # apex up
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    raise ValueError(f"unknown shape {shape!r}")


def texture_fill(texture: str, h: int, w: int, a: Appearance) -> np.ndarray:
    """(h,w,3) uint8 texture of a stuff class."""
    yy, xx = np.mgrid[0:h, 0:w]
    if texture == "solid":
        sel = np.zeros((h, w), dtype=bool)
    elif texture == "horizontal stripes":
        sel = (yy // 3) % 2 == 1
    elif texture == "vertical stripes":
        sel = (xx // 3) % 2 == 1
    elif texture == "checker":
        sel = ((yy // 4) + (xx // 4)) % 2 == 1
    elif texture == "dots":
        sel = (yy % 5 == 2) & (xx % 5 == 2)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[:] = a.colour
    out[sel] = a.colour2
    return out


def render_scene(rng: np.random.Generator, h: int, w: int, stuff: list[SceneClass], things: list[SceneClass],
                 *, n_things: tuple[int, int] = (1, 4), crowd_prob: float = 0.0, void_prob: float = 0.4,
                 min_pixels: int = 12) -> tuple[np.ndarray, np.ndarray, list[Segment]]:
    """One scene: (image uint8 (h,w,3), segment ids int32 (h,w) with 0 = void, segments).

    Segment ids are (class index + 1) * 1000 + k, so the RGB encoding uses two channels.
    Thing instances smaller than `min_pixels` after occlusion are removed (painted over
    by what lies beneath is not possible, so they become part of the stuff below).
    """
    image = np.zeros((h, w, 3), dtype=np.uint8)
    seg = np.zeros((h, w), dtype=np.int32)
    segments: dict[int, Segment] = {}
    # Stuff: one region, or two split at a random row (top / bottom).
    n_stuff = 1 if len(stuff) == 1 or rng.random() < 0.4 else 2
    picked = [stuff[i] for i in rng.choice(len(stuff), size=n_stuff, replace=False)] if stuff else []
    split = int(rng.integers(h // 3, 2 * h // 3 + 1))
    for j, c in enumerate(picked):
        rows = slice(0, split) if (n_stuff == 2 and j == 0) else (slice(split, h) if n_stuff == 2 else slice(0, h))
        a = appearance(c.name)
        tex = texture_fill(a.texture, h, w, a)
        image[rows] = tex[rows]
        sid = (c.index + 1) * 1000 + j
        seg[rows] = sid
        segments[sid] = Segment(sid, c)
    k = 100
    # Crowd: a cluster of small shapes of one thing class, one segment flagged iscrowd.
    if things and crowd_prob and rng.random() < crowd_prob:
        c = things[int(rng.integers(len(things)))]
        a = appearance(c.name)
        by, bx = int(rng.integers(4, h - 20)), int(rng.integers(4, w - 20))
        m = np.zeros((h, w), dtype=bool)
        for _ in range(int(rng.integers(3, 6))):
            m |= shape_mask(a.shape, h, w, by + rng.uniform(0, 16), bx + rng.uniform(0, 16), rng.uniform(2.5, 4))
        sid = (c.index + 1) * 1000 + k
        k += 1
        image[m] = a.colour
        seg[m] = sid
        segments[sid] = Segment(sid, c, iscrowd=True)
    # Things: a few instances; later ones occlude earlier ones.
    if things:
        for _ in range(int(rng.integers(n_things[0], n_things[1] + 1))):
            c = things[int(rng.integers(len(things)))]
            a = appearance(c.name)
            r = int(rng.integers(7, 15))
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            m = shape_mask(a.shape, h, w, cy, cx, r)
            sid = (c.index + 1) * 1000 + k
            k += 1
            image[m] = a.colour
            seg[m] = sid
            segments[sid] = Segment(sid, c, cx=cx / w, radius=r)
    # Void: a grey noisy patch that belongs to no class.
    if rng.random() < void_prob:
        vh, vw = int(rng.integers(5, 12)), int(rng.integers(5, 12))
        y0, x0 = int(rng.integers(0, h - vh)), int(rng.integers(0, w - vw))
        image[y0:y0 + vh, x0:x0 + vw] = VOID_GREY
        seg[y0:y0 + vh, x0:x0 + vw] = 0
    # Drop segments that lost (almost) all their pixels; tiny remains become void.
    present = []
    for sid, s in segments.items():
        n = int((seg == sid).sum())
        if n == 0:
            continue
        if n < min_pixels and s.cls.thing:
            seg[seg == sid] = 0
            continue
        present.append(s)
    noise = rng.normal(0, 5, size=image.shape)
    image = np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    return image, seg, sorted(present, key=lambda s: s.id)
