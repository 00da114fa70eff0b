"""The detector geometry of a scene: q and χ per pixel around the beam, the polar cells of the
visibility rule, beamstop transmission (with its penumbra) and the background field."""

from __future__ import annotations

import math
from functools import cached_property, lru_cache

import numpy as np

from pipeline.sim.rules import J_CELLS, REF


@lru_cache(maxsize=8)
def pixel_axis(size: int) -> np.ndarray:
    return ((np.arange(size) + 0.5) / size).astype(np.float32)


class Geometry:
    """Pixel positions around the beam centre, in detector widths (x right, y down)."""

    def __init__(self, size: int, beam: dict):
        self.size = size
        self.beam = beam
        axis = pixel_axis(size)
        self.dx = (axis - np.float32(beam["x"]))[None, :]
        self.dy = (axis - np.float32(beam["y"]))[:, None]
        self.rho = np.sqrt(self.dx**2 + self.dy**2)
        corners = [(cx - beam["x"]) ** 2 + (cy - beam["y"]) ** 2 for cx in (0, 1) for cy in (0, 1)]
        self.rho_max = math.sqrt(max(corners)) + 2.0 / size

    @cached_property
    def chi(self) -> np.ndarray:
        return np.arctan2(self.dy, self.dx)

    @cached_property
    def step(self) -> float:
        """Radial step of the rendering tables: a quarter pixel (of at least 256)."""
        return 1.0 / (4 * max(self.size, REF))

    @cached_property
    def radial_index(self) -> np.ndarray:
        return (self.rho * np.float32(1 / self.step)).astype(np.intp)

    @cached_property
    def n_angles(self) -> int:
        return max(720, 2 * self.size)

    @cached_property
    def angular_index(self) -> np.ndarray:
        scale = np.float32(self.n_angles / (2 * math.pi))
        index = ((self.chi + np.float32(math.pi)) * scale).astype(np.intp)
        return np.minimum(index, self.n_angles - 1, out=index)  # χ = π exactly lands on n

    @cached_property
    def angle_table(self) -> np.ndarray:
        return -math.pi + (np.arange(self.n_angles) + 0.5) * (2 * math.pi / self.n_angles)

    @cached_property
    def by_radius(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixels sorted by whole-pixel radius, to render a thin ring over its annulus only."""
        key = (self.rho * np.float32(self.size)).astype(np.int16).ravel()
        order = np.argsort(key, kind="stable")
        return order, key[order]


REACH = 2 * REF  # the cell table covers beams up to one detector width off the detector


def _polar_cells(dx: np.ndarray, dy: np.ndarray, n_angles: int) -> np.ndarray:
    """Cell id = radius in reference pixels × n_angles + azimuth cell, for offsets in pixels."""
    k = np.sqrt(dx**2 + dy**2).astype(np.int64)
    j = ((np.arctan2(dy, dx) + math.pi) * (n_angles / (2 * math.pi))).astype(np.int64) % n_angles
    return k * n_angles + j


@lru_cache(maxsize=2)
def _cell_table(n_angles: int) -> np.ndarray:
    offsets = np.arange(-REACH, REACH + 1, dtype=np.float64)
    return _polar_cells(offsets[None, :], offsets[:, None], n_angles).astype(np.int32)


def cell_ids(beam: dict, n_angles: int = J_CELLS) -> np.ndarray:
    """The polar cell of every reference pixel, the beam rounded to the nearest pixel centre."""
    bx, by = round(beam["x"] * REF - 0.5), round(beam["y"] * REF - 0.5)
    if all(REF - 1 - REACH <= b <= REACH for b in (bx, by)):
        table = _cell_table(n_angles)
        return table[REACH - by : REACH - by + REF, REACH - bx : REACH - bx + REF]
    return _polar_cells(np.arange(REF)[None, :] - bx, np.arange(REF)[:, None] - by, n_angles)


def _soft(distance: np.ndarray, penumbra: float, leak: float) -> np.ndarray:
    """Transmission from the signed distance outside a shadow: `leak` inside, 1 outside.

    The source's size and the stop-to-detector distance blur the edge into a linear ramp
    `penumbra` wide; a rod thinner than its penumbra has no fully dark core.
    """
    inside = np.clip(0.5 - distance * np.float32(1 / penumbra), 0, 1)
    return 1 - np.float32(1 - leak) * inside


def _bar(dx, dy, angle: float, width: float, start: float):
    """Distance outside a bar of `width` leaving the point (dx, dy) = 0 along `angle`.

    The bar starts `start` behind that point with a rounded end, and runs off the detector.
    """
    ux, uy = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    sx, sy = dx + np.float32(start) * ux, dy + np.float32(start) * uy
    along = sx * ux + sy * uy
    across = np.abs(sy * ux - sx * uy)
    end = np.sqrt(sx**2 + sy**2)
    return np.where(along > 0, across, end) - np.float32(width / 2)


def transmission(geom: Geometry, beamstop: dict | None) -> np.ndarray | None:
    """Fraction of x-rays the beamstop lets through at each pixel (None: no beamstop)."""
    if not beamstop:
        return None
    kind = beamstop["kind"]
    if kind == "linear":
        d = _bar(geom.dx, geom.dy, beamstop["angle"], beamstop["width"], beamstop["overhang"])
    elif kind == "circular":
        ox, oy = beamstop["offset"]
        dx, dy = geom.dx - np.float32(ox), geom.dy - np.float32(oy)
        disc = np.sqrt(dx**2 + dy**2) - np.float32(beamstop["radius"])
        d = np.minimum(disc, _bar(dx, dy, beamstop["arm_angle"], beamstop["arm_width"], 0.0))
    else:  # wedge: apex a little behind the beam, opening towards the edge
        angle, half = beamstop["angle"], beamstop["half_angle"]
        ux, uy = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        sx, sy = (
            geom.dx + np.float32(beamstop["apex"]) * ux,
            geom.dy + np.float32(beamstop["apex"]) * uy,
        )
        along, across = sx * ux + sy * uy, np.abs(sy * ux - sx * uy)
        d = (across - along * np.float32(math.tan(half))) * np.float32(math.cos(half))
    return _soft(d, beamstop["penumbra"], beamstop["transmission"])


def _hat_weights(coords: np.ndarray, nodes: int) -> np.ndarray:
    """Bilinear interpolation weights of positions in [0, 1] onto `nodes` evenly spaced nodes."""
    t = np.clip(coords, 0, 1)[:, None] * (nodes - 1)
    return np.maximum(0, 1 - np.abs(t - np.arange(nodes)[None, :]))


def background_field(background: dict, x: np.ndarray, y: np.ndarray, grid: bool) -> np.ndarray:
    """Background counts per pixel: level × a smooth field (on a grid of x × y, or at points)."""
    nodes = np.exp(np.asarray(background["structure"], dtype=np.float64))
    wx, wy = _hat_weights(x, nodes.shape[1]), _hat_weights(y, nodes.shape[0])
    field = wy @ nodes @ wx.T if grid else np.sum((wy @ nodes) * wx, axis=1)
    return background["level"] * field


# ================================================================ the scene
