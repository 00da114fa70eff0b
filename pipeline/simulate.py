"""Physics-grounded synthetic SAXS/WAXS detector images whose 17 tags follow from what is visible.

`simulate_image` draws one image, `simulate_dataset` writes many through the run store, and
`python -m pipeline simulate` is the command line for both.

How an image is made: parameters are drawn first (`draw_params`, the only random step besides
the final Poisson noise); `Scene(params)` builds the scattering modules as functions of q and χ
around the beam centre on a size-independent q-map (the detector is Q_PER_WIDTH nm⁻¹ wide
at any pixel count), decides the tags, and renders the expected counts at any size; Poisson
noise is drawn once at the end.

The visibility rule (the tags' honesty). Each feature f is judged on the expected (noise-free)
image, on the 256×256 reference grid in polar cells of one pixel × 10° (1° for the spots of a
polycrystalline ring), counting only pixels that are on the detector and neither shadowed nor
in a gap; cell values average over each pixel's width as a detector pixel does. Let F be its
expected counts and O those of everything else (background, dark counts, all other features).
Its region R is where F ≥ CONTRAST·O. f is visible when R covers at least MIN_AREA of the
detector and ΣR F ≥ K_SIGMA·√(ΣR O), i.e. its excess counts are significant against the
Poisson noise of what lies under it. (Judged pixel by pixel on rendered images instead, the
rule gives the same answer for 99.5 % of features; the rest sit at the MIN_AREA boundary.)

Counts: "Ring" = at least one visible sharp ring (lattice reflection, ring-sequence order, or
single ring; spotty rings included); "Many rings" = MANY_RINGS or more;
"Higher orders" = one sequence (BCC, FCC, lamellar, hexagonal) with HIGHER_ORDERS or more
visible peaks; "BCC"/"FCC" = LATTICE_PEAKS or more visible reflections of that lattice (one
peak alone does not identify a lattice). A sequence counts only if its first peak is visible:
without it no peak can be indexed. Visible rings closer than RESOLVE widths count as one, as
they blend into one broad ring; "Polycrystalline" = a visible spotty ring. Beamstop
tags need MIN_SHADOW of the detector in shadow; the beamstop sits on the beam, so an image whose
beam centre is off the detector ("Beam Off Image") has none. Scattering strength compares the
mean sample signal S with the mean background B per valid pixel: "Strong scattering" when
S ≥ STRONG_RATIO·B and S ≥ STRONG_COUNTS; "Weak scattering" when S < WEAK_RATIO·B or
S < WEAK_COUNTS (in between: neither); "High background" when B ≥ HIGH_BG_COUNTS and
B ≥ HIGH_BG_SHARE·S.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import physics
from pipeline.attributes import ATTRIBUTES
from pipeline.errors import PipelineError
from pipeline.store import DatasetWriter, new_id

GENERATOR_VERSION = 1
REF = 256  # tags are judged on this reference grid, so they do not depend on the image size
Q_PER_WIDTH = 2.0  # nm⁻¹ across one detector width: a small-angle geometry
MIN_SIZE, MAX_SIZE = 32, 1024
NORM_RADIUS = 0.6  # module brightness is set over this disc around the beam (detector widths)

CONTRAST = 0.5
K_SIGMA = 5.0
MIN_AREA = 0.001  # of the detector area: ≈ 65 pixels at 256², 16 at 128²
MIN_SHADOW = 0.004
MANY_RINGS = 4
HIGHER_ORDERS = 3
LATTICE_PEAKS = 2
RESOLVE = 2.5  # rings closer than this many widths blend into one seen ring
STRONG_RATIO, STRONG_COUNTS = 3.0, 20.0
WEAK_RATIO, WEAK_COUNTS = 0.5, 0.3
HIGH_BG_COUNTS, HIGH_BG_SHARE = 8.0, 0.25

LEAK = 1e-12  # beamstop transmission: opaque even under the strongest low-q scattering
FLOOR = 0.02  # dark counts per pixel, not blocked by the beamstop
SATURATION = 2.0**20 - 1  # a pixel counter's depth (20-bit, as on photon-counting detectors)
EDGE = 1.0 / REF  # soft edge of shadows, one reference pixel
J_CELLS = 36  # 10° azimuthal cells for the visibility rule
J_FINE = 360  # 1° cells, for the spots of polycrystalline rings
SPOT_ANGLES = 4 * J_FINE  # a spotty ring's angular factor is evaluated once on this grid
NOISE_STREAM, SPLIT_STREAM = 2**40 + 1, 2**40 + 2  # seed keys apart from image indices
TAG_INDEX = {name: i for i, name in enumerate(ATTRIBUTES)}


# ================================================================ drawing parameters


def _log_uniform(rng, low, high) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _direction(rng) -> float:
    """Beamstop arms come mostly along the detector axes, sometimes at any angle."""
    if rng.random() < 0.6:
        return float(rng.integers(4) * math.pi / 2 + rng.normal(0, 0.03))
    return float(rng.uniform(-math.pi, math.pi))


def _draw_beam(rng) -> dict:
    u, side = rng.random(), int(rng.integers(4))
    along = float(rng.uniform(0.2, 0.8))
    if u < 0.13:  # off the detector: only arcs of the pattern are seen
        inner = -float(rng.uniform(0.04, 0.35))
    elif u < 0.38:  # near an edge, as for a long q range
        inner = float(rng.uniform(0.06, 0.25))
    else:
        x, y = rng.uniform(0.38, 0.62, 2)
        return {"x": float(x), "y": float(y)}
    x, y = [(inner, along), (1 - inner, along), (along, inner), (along, 1 - inner)][side]
    return {"x": x, "y": y}


def _draw_beamstop(rng, beam) -> dict | None:
    if not (0 <= beam["x"] < 1 and 0 <= beam["y"] < 1):
        return None
    u = rng.random()
    if u < 0.36:
        return {
            "kind": "circular",
            "radius": float(rng.uniform(0.025, 0.07)),
            "offset": [float(v) for v in rng.normal(0, 0.004, 2)],
            "arm_angle": _direction(rng),
            "arm_width": float(rng.uniform(0.008, 0.018)),
        }
    if u < 0.66:
        width = float(rng.uniform(0.03, 0.07))
        return {
            "kind": "linear",
            "width": width,
            "angle": _direction(rng),
            "overhang": float(width * rng.uniform(0.3, 1.0)),
        }
    if u < 0.88:
        return {
            "kind": "wedge",
            "half_angle": float(math.radians(rng.uniform(3, 9))),
            "angle": _direction(rng),
            "apex": float(rng.uniform(0.03, 0.08)),
        }
    return None


def _draw_gaps(rng) -> list[dict]:
    if rng.random() > 0.3:
        return []
    axes = [["h"], ["v"], ["h", "v"]][int(rng.integers(3))]
    return [
        {"axis": a, "pos": float(rng.uniform(0.2, 0.8)), "width": float(rng.uniform(0.012, 0.03))}
        for a in axes
    ]


def _draw_background(rng) -> dict:
    grid = np.zeros((4, 4))
    if rng.random() < 0.5:  # air scatter and fluorescence vary slowly across the detector
        grid = rng.normal(0, 0.35, (4, 4))
    if rng.random() < 0.3:
        g = np.linspace(-0.5, 0.5, 4)
        grid += rng.normal(0, 0.8) * g[None, :] + rng.normal(0, 0.8) * g[:, None]
    noisy = rng.random() < 0.2
    return {
        "level": _log_uniform(rng, 0.2, 50),
        "structure": grid.round(4).tolist(),
        "gain_noise": float(rng.uniform(0.05, 0.2)) if noisy else 0.0,
        "gain_seed": int(rng.integers(2**31)),
    }


def _draw_texture(rng, n_rings: int, p_arcs: float, p_spots: float) -> dict:
    u = rng.random()
    if u < p_arcs:  # an oriented sample: every order in the same arcs
        return {
            "kind": "arcs",
            "eta": float(rng.uniform(0.4, 0.85)),
            "chi0": float(rng.uniform(0, math.pi)),
        }
    if u < p_arcs + p_spots:  # a few grains: spots along each ring
        spots = []
        for _ in range(n_rings):
            k = int(rng.integers(3, 13))
            spots.append(
                {
                    "chi": rng.uniform(-math.pi, math.pi, k).round(4).tolist(),
                    "weight": rng.exponential(1.0, k).round(4).tolist(),
                }
            )
        return {"kind": "spots", "rings": spots}
    return {"kind": "powder"}


def _draw_lowq(rng) -> dict:
    form = str(
        rng.choice(
            ["power", "guinier", "oz", "debye_bueche", "spheres"], p=[0.35, 0.2, 0.2, 0.1, 0.15]
        )
    )
    m = {"kind": "lowq", "form": form}
    if form == "power":
        m |= {
            "exponent": float(rng.uniform(2.0, 4.0)),
            "q_cut": float(rng.uniform(0.008, 0.025) * Q_PER_WIDTH),
        }
    elif form == "guinier":
        m["rg"] = float(math.sqrt(3) / (rng.uniform(0.04, 0.2) * Q_PER_WIDTH))
    elif form == "oz":
        m["xi"] = float(1 / (rng.uniform(0.01, 0.08) * Q_PER_WIDTH))
    elif form == "debye_bueche":
        m["a"] = float(1 / (rng.uniform(0.02, 0.1) * Q_PER_WIDTH))
    else:  # the first minimum of a sphere's form factor sits at qR = 4.49
        m |= {
            "radius": float(4.49 / (rng.uniform(0.08, 0.35) * Q_PER_WIDTH)),
            "polydispersity": float(rng.uniform(0.08, 0.3)),
        }
    if rng.random() < 0.35:
        m["aniso"] = {
            "epsilon": float(rng.uniform(1.6, 3.0)),
            "chi0": float(rng.uniform(0, math.pi)),
        }
    return m


def _draw_suspension(rng) -> dict:
    """Concentrated spheres: P(q)S(q), with the hard-sphere peak near qσ ≈ 6.5."""
    diameter = 6.5 / (rng.uniform(0.05, 0.18) * Q_PER_WIDTH)
    return {
        "kind": "suspension",
        "diameter": float(diameter),
        "radius": float(diameter / 2 / rng.uniform(1.0, 1.5)),
        "phi": float(rng.uniform(0.25, 0.48)),
        "polydispersity": float(rng.uniform(0.05, 0.15)),
    }


def _draw_lattice(rng) -> dict:
    lattice = "bcc" if rng.random() < 0.5 else "fcc"
    m1 = physics.cubic_reflections(lattice)[0][0]
    q1 = rng.uniform(0.04, 0.13) * Q_PER_WIDTH
    a = 2 * math.pi * math.sqrt(m1) / q1
    nearest = a * math.sqrt(3) / 2 if lattice == "bcc" else a / math.sqrt(2)
    n = len(physics.cubic_reflections(lattice))
    return {
        "kind": "lattice",
        "lattice": lattice,
        "a": float(a),
        "radius": float(nearest / 2 * rng.uniform(0.55, 0.85)),
        "width": float(rng.uniform(1.0, 2.2) / REF * Q_PER_WIDTH),
        "sigma_dw": float(a * rng.uniform(0.01, 0.06)),
        "disorder": float(rng.uniform(0.0, 0.2)),
        "texture": _draw_texture(rng, n, 0.0, 0.35),
    }


def _draw_rings(rng) -> dict:
    kind = str(rng.choice(["lamellar", "hexagonal", "single"], p=[0.3, 0.25, 0.45]))
    width = float(rng.uniform(1.0, 2.5) / REF * Q_PER_WIDTH)
    if kind == "single":  # unrelated rings (an unindexed powder): no sequence, no orders
        k = int(rng.integers(1, 8))
        q0 = np.sort(rng.uniform(0.08, 0.6, k)) * Q_PER_WIDTH
        heights = [_log_uniform(rng, 0.1, 1.0) for _ in range(k)]
    else:
        q1 = rng.uniform(0.05, 0.16) * Q_PER_WIDTH
        q0 = q1 * physics.sequence_ratios(kind, 8)
        damping = rng.uniform(0.15, 1.2) / q1  # Debye–Waller σ: how fast the orders fade
        heights = np.exp(-(damping**2) * (q0**2 - q1**2)).tolist()
    return {
        "kind": "rings",
        "sequence": kind,
        "q": np.round(q0, 5).tolist(),
        "height": np.round(heights, 5).tolist(),
        "width": width,
        "texture": _draw_texture(rng, len(q0), 0.25, 0.25),
    }


def _draw_halo(rng) -> dict:
    m = {
        "kind": "halo",
        "q0": float(rng.uniform(0.2, 0.5) * Q_PER_WIDTH),
        "width": float(rng.uniform(0.04, 0.1) * Q_PER_WIDTH),
    }
    if rng.random() < 0.35:
        m["aniso"] = {"eta": float(rng.uniform(0.2, 0.6)), "chi0": float(rng.uniform(0, math.pi))}
    return m


def _draw_highq(rng) -> dict:
    m = {"kind": "highq", "sigma": float(1 / (rng.uniform(0.12, 0.35) * Q_PER_WIDTH))}
    if rng.random() < 0.3:
        m["aniso"] = {"eta": float(rng.uniform(0.2, 0.5)), "chi0": float(rng.uniform(0, math.pi))}
    return m


# Each module appears independently with its probability (seed 001: "a random set of modules").
MODULE_DRAWS: tuple[tuple[float, Callable], ...] = (
    (0.15, _draw_lowq),
    (0.28, _draw_suspension),
    (0.32, _draw_lattice),
    (0.32, _draw_rings),
    (0.30, _draw_halo),
    (0.25, _draw_highq),
)


def draw_params(rng: np.random.Generator) -> dict:
    """All random choices of one image (JSON-able); `Scene(params)` is then deterministic."""
    beam = _draw_beam(rng)
    modules = []
    for probability, draw in MODULE_DRAWS:
        if rng.random() < probability:
            modules.append(draw(rng) | {"weight": _log_uniform(rng, 0.05, 1.0)})
    zingers = [
        [float(v) for v in rng.random(2)] + [_log_uniform(rng, 1e3, 1e5)]
        for _ in range(int(rng.integers(1, 6)) if rng.random() < 0.15 else 0)
    ]
    return {
        "version": GENERATOR_VERSION,
        "beam": beam,
        "signal": _log_uniform(rng, 0.3, 800),
        "background": _draw_background(rng),
        "modules": modules,
        "beamstop": _draw_beamstop(rng, beam),
        "gaps": _draw_gaps(rng),
        "zingers": zingers,
    }


# ================================================================ components of a scene


@dataclass
class Component:
    """One feature: radial(q) × angular(χ), optionally with q stretched by azimuth."""

    role: str  # ring | lowq | sf | halo | highq | beam
    radial: Callable[[np.ndarray], np.ndarray]
    angular: Callable[[np.ndarray], np.ndarray] | None = None
    angular_key: str | None = None  # components sharing it are rendered together
    stretch: Callable[[np.ndarray], np.ndarray] | None = None
    family: str | None = None  # the peak sequence it belongs to
    order: int = 0  # its place in that sequence, from 1
    spotty: bool = False
    support: tuple[float, float] = (0.0, math.inf)  # q range outside which it is negligible
    q0: float = 0.0  # a ring's centre and width (nm⁻¹)
    width: float = 0.0
    scale: float = 1.0
    name: str = ""
    cells: np.ndarray | None = None  # unscaled values on the reference cells, once computed
    radial_cells: np.ndarray | None = None
    spot_table: np.ndarray | None = None  # a spotty ring's angular factor on SPOT_ANGLES


def _peak(q0: float, width: float, height: float = 1.0) -> Callable:
    return lambda q: height * physics.gaussian_peak(q, q0, width)


def _texture_angular(texture: dict, index: int, q0: float, width: float):
    """The angular factor of ring `index` of a module, and whether it is spotty."""
    if texture["kind"] == "arcs":
        eta, chi0 = texture["eta"], texture["chi0"]
        return (lambda chi: physics.wrapped_cauchy(chi, chi0, eta, 2)), "arcs", False
    if texture["kind"] == "spots":
        ring = texture["rings"][index]
        spot = max(width / q0, 0.01)  # round spots: as wide in χ as the ring is in q

        def angular(chi):
            return physics.grain_spots(chi, ring["chi"], ring["weight"], spot)

        angular.table = lambda n: physics.grain_spots_table(n, ring["chi"], ring["weight"], spot)
        return angular, None, True
    return None, None, False


def _ring_components(module: dict, q0s, heights, family: str | None, role_name: str):
    width, texture = module["width"], module["texture"]
    out = []
    for i, (q0, height) in enumerate(zip(q0s, heights, strict=True)):
        angular, key, spotty = _texture_angular(texture, i, q0, width)
        out.append(
            Component(
                "ring",
                _peak(q0, width, height),
                angular,
                key,
                family=family,
                order=i + 1,
                spotty=spotty,
                support=(q0 - 5 * width, q0 + 5 * width),
                q0=float(q0),
                width=float(width),
                name=f"{role_name} {i + 1}",
            )
        )
    return out


def _lowq_radial(m: dict) -> Callable:
    form = m["form"]
    if form == "power":
        return lambda q: physics.power_law(q, m["exponent"], m["q_cut"])
    if form == "guinier":
        return lambda q: physics.guinier(q, m["rg"])
    if form == "oz":
        return lambda q: physics.ornstein_zernike(q, m["xi"])
    if form == "debye_bueche":
        return lambda q: physics.debye_bueche(q, m["a"])
    return lambda q: physics.sphere_form_factor(q, m["radius"], m["polydispersity"])


def _stretch(aniso: dict | None):
    if not aniso:
        return None
    return lambda chi: physics.ellipse_stretch(chi, aniso["chi0"], aniso["epsilon"])


def _build_lowq(m: dict) -> list[Component]:
    return [Component("lowq", _lowq_radial(m), stretch=_stretch(m.get("aniso")), name="low-q")]


def _last_call(fn: Callable) -> Callable:
    """Remember fn's result for the array it was last called with (two parts share one P·S)."""
    memo: list = [None, None]

    def call(q):
        if memo[0] is not q:
            memo[:] = [q, fn(q)]
        return memo[1]

    return call


def _build_suspension(m: dict) -> list[Component]:
    """P(q)S(q) split in two: where S > 1 the structure-factor peak, the rest diffuse low-q."""

    @_last_call
    def form_and_s(q):
        form = physics.sphere_form_factor(q, m["radius"], m["polydispersity"])
        return form, physics.percus_yevick(q, m["diameter"], m["phi"])

    def diffuse(q):
        form, s = form_and_s(q)
        return form * np.minimum(s, 1.0)

    def peak(q):
        form, s = form_and_s(q)
        return form * np.maximum(s - 1.0, 0.0)

    return [
        Component("lowq", diffuse, name="suspension"),
        Component("sf", peak, name="structure factor"),
    ]


def _build_lattice(m: dict) -> list[Component]:
    """Powder reflections of a nanoparticle superlattice: multiplicity·P(q)·DW(q)/q² each."""
    reflections = physics.cubic_reflections(m["lattice"])
    q = np.array([2 * math.pi * math.sqrt(mm) / m["a"] for mm, _ in reflections])
    mult = np.array([mu for _, mu in reflections], dtype=float)
    height = mult * physics.sphere_form_factor(q, m["radius"], 0.05)
    height *= physics.debye_waller(q, m["sigma_dw"]) / q**2  # Lorentz factor of a powder
    height /= height.max()
    parts = _ring_components(m, q, height, m["lattice"], f"{m['lattice'].upper()} peak")
    if m["disorder"] > 0:  # particles off the lattice scatter diffusely
        amount = m["disorder"] * height.sum() * m["width"] * 2.5 / q[0]
        parts.append(
            Component(
                "lowq",
                lambda qq: amount * physics.sphere_form_factor(qq, m["radius"], 0.1),
                name="lattice disorder",
            )
        )
    return parts


def _build_rings(m: dict) -> list[Component]:
    family = None if m["sequence"] == "single" else m["sequence"]
    return _ring_components(m, m["q"], m["height"], family, f"{m['sequence']} ring")


def _aniso_angular(aniso: dict | None, key: str):
    if not aniso:
        return None, None
    return (lambda chi: physics.wrapped_cauchy(chi, aniso["chi0"], aniso["eta"], 2)), key


def _build_halo(m: dict) -> list[Component]:
    angular, key = _aniso_angular(m.get("aniso"), "halo")
    return [
        Component(
            "halo",
            _peak(m["q0"], m["width"]),
            angular,
            key,
            support=(max(0.0, m["q0"] - 5 * m["width"]), m["q0"] + 5 * m["width"]),
            name="halo",
        )
    ]


def _build_highq(m: dict) -> list[Component]:
    angular, key = _aniso_angular(m.get("aniso"), "highq")
    return [
        Component(
            "highq",
            lambda q: physics.high_q_diffuse(q, m["sigma"]),
            angular,
            key,
            name="high-q diffuse",
        )
    ]


BUILDERS = {
    "lowq": _build_lowq,
    "suspension": _build_suspension,
    "lattice": _build_lattice,
    "rings": _build_rings,
    "halo": _build_halo,
    "highq": _build_highq,
}


# ================================================================ detector geometry


@lru_cache(maxsize=8)
def _axis(size: int) -> np.ndarray:
    return ((np.arange(size) + 0.5) / size).astype(np.float32)


class Geometry:
    """Pixel positions around the beam centre, in detector widths (x right, y down)."""

    def __init__(self, size: int, beam: dict):
        self.size = size
        self.beam = beam
        axis = _axis(size)
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


def _soft(distance: np.ndarray) -> np.ndarray:
    """Transmission from the signed distance outside a shadow: LEAK inside, 1 outside."""
    inside = np.clip(0.5 - distance * np.float32(1 / EDGE), 0, 1)
    return 1 - np.float32(1 - LEAK) * inside


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
    return _soft(d)


def gap_slices(size: int, gaps: list[dict]) -> list[tuple[str, slice]]:
    """Rows ('h') or columns ('v') of dead pixels between detector modules; at least one pixel."""
    out = []
    for gap in gaps:
        start = int(round((gap["pos"] - gap["width"] / 2) * size))
        stop = max(start + 1, int(round((gap["pos"] + gap["width"] / 2) * size)))
        out.append((gap["axis"], slice(max(start, 0), min(stop, size))))
    return out


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


class Scene:
    """A scene built from drawn parameters: its components, its tags, its expected image.

    Everything here is deterministic; tags are judged on the 256² reference grid, so a scene
    has the same tags at any rendered size.
    """

    def __init__(self, params: dict):
        self.params = params
        self.ref = Geometry(REF, params["beam"])
        self.ref_transmission = transmission(self.ref, params["beamstop"])
        self._cells()
        self.components = self._components()
        self.measured = self._measure()
        self.tags = self._tags()

    # ---------------------------------------------------------------- reference cells

    def _cells(self) -> None:
        """Polar cells (one reference pixel × 10°) with their counts of valid pixels."""
        cell = cell_ids(self.params["beam"]).ravel()
        n_k = int(cell.max()) // J_CELLS + 1
        self.valid_ref = self._valid(REF, self.ref_transmission).ravel()
        self.n_valid = np.bincount(cell[self.valid_ref], minlength=n_k * J_CELLS)
        self.n_valid = self.n_valid.reshape(n_k, J_CELLS)
        self.q_cells = (np.arange(n_k) + 0.5) / REF * Q_PER_WIDTH
        self.chi_cells = -math.pi + (np.arange(J_CELLS) + 0.5) * (2 * math.pi / J_CELLS)
        self.bg_cells = self._background_cells(n_k)

    def _background_cells(self, n_k: int) -> np.ndarray:
        background = self.params["background"]
        if not np.any(background["structure"]):
            return np.full((n_k, J_CELLS), background["level"])
        # the field is smooth over a third of the detector: every 4th radius is plenty
        rho = (np.arange(0, n_k, 4) + 2.0) / REF
        x = self.params["beam"]["x"] + rho[:, None] * np.cos(self.chi_cells)[None, :]
        y = self.params["beam"]["y"] + rho[:, None] * np.sin(self.chi_cells)[None, :]
        bg = background_field(background, x.ravel(), y.ravel(), grid=False)
        return np.repeat(bg.reshape(len(rho), J_CELLS), 4, axis=0)[:n_k]

    @cached_property
    def n_valid_fine(self) -> np.ndarray:
        """Valid pixels per 1° cell, for judging spotty rings."""
        cell = cell_ids(self.params["beam"], J_FINE).ravel()[self.valid_ref]
        n_k = len(self.q_cells)
        counts = np.bincount(cell, minlength=n_k * J_FINE)[: n_k * J_FINE]
        return counts.reshape(n_k, J_FINE)

    def valid_mask(self, size: int = REF) -> np.ndarray:
        """Pixels on which features can be seen: neither in the beamstop's shadow nor a gap."""
        geom = self.ref if size == REF else Geometry(size, self.params["beam"])
        trans = (
            self.ref_transmission if size == REF else transmission(geom, self.params["beamstop"])
        )
        return self._valid(size, trans)

    def _valid(self, size: int, trans: np.ndarray | None) -> np.ndarray:
        valid = np.ones((size, size), dtype=bool) if trans is None else trans > 0.5
        for axis, sl in gap_slices(size, self.params["gaps"]):
            if axis == "h":
                valid[sl, :] = False
            else:
                valid[:, sl] = False
        return valid

    def on_cells(self, comp: Component) -> np.ndarray:
        """A component's expected counts on the reference cells: (K, 1) or (K, J)."""
        if comp.cells is None:
            comp.cells = self._evaluate_cells(comp)
        return comp.scale * comp.cells

    def _evaluate_cells(self, comp: Component) -> np.ndarray:
        if comp.stretch is None:
            values = self._radial_cells(comp)[:, None]
        else:
            values = comp.radial(self.q_cells[:, None] * comp.stretch(self.chi_cells)[None, :])
        if comp.spotty:
            values = values * spot_table(comp).reshape(J_CELLS, -1).mean(axis=1)[None, :]
        elif comp.angular is not None:  # averaged over each 10° cell
            fine = self.chi_cells[:, None] + (np.arange(16) - 7.5)[None, :] * (
                math.pi / J_CELLS / 8
            )
            values = values * comp.angular(fine).mean(axis=1)[None, :]
        return values

    @cached_property
    def _q_quarters(self) -> np.ndarray:
        n_k = len(self.q_cells)
        return np.abs((np.arange(4 * n_k + 8) - 4 + 0.5) / (4 * REF) * Q_PER_WIDTH)

    def _radial_cells(self, comp: Component) -> np.ndarray:
        """Radial values per cell as pixels record them: each pixel averages over its width.

        Sampled at quarter cells, averaged over one pixel (box of 4), then over the cell.
        """
        if comp.radial_cells is None:
            n_k = len(self.q_cells)
            smooth = np.convolve(comp.radial(self._q_quarters), np.full(4, 0.25), mode="same")
            comp.radial_cells = smooth[4 : 4 + 4 * n_k].reshape(n_k, 4).mean(axis=1)
        return comp.radial_cells

    # ---------------------------------------------------------------- components

    def _components(self) -> list[Component]:
        """Every module's components, scaled so modules share the drawn mean signal by weight.

        A module's mean is taken over a disc of radius NORM_RADIUS around the beam (what a
        centred detector sees), so a sample scatters alike wherever the detector sits.
        """
        modules = self.params["modules"]
        total_weight = sum(m["weight"] for m in modules) or 1.0
        q_edge = self.q_cells[-1]  # beyond the farthest detector pixel nothing is seen
        out = []
        for m in modules:
            parts = BUILDERS[m["kind"]](m)
            mean = sum(self._disc_mean(c) for c in parts)
            if mean <= 1e-12:  # nothing of it falls near the beam: leave it out
                continue
            for c in parts:
                c.scale = self.params["signal"] * m["weight"] / total_weight / mean
            out.extend(c for c in parts if c.support[0] <= q_edge)
        if self.params["beamstop"] is None and self._beam_on():
            out.append(self._direct_beam())
        return out

    def _disc_mean(self, comp: Component) -> float:
        """A component's mean over the disc ρ < NORM_RADIUS around the beam (scale 1).

        Angular factors have mean 1, so only stretched components need their azimuths.
        """
        k = int(NORM_RADIUS * REF)
        area = 2 * np.arange(k) + 1.0  # annulus areas in units of π/J reference pixels
        if comp.stretch is None:
            q = (np.arange(k) + 0.5) / REF * Q_PER_WIDTH
            inner = comp.radial(q)
        else:
            q = (np.arange(k) + 0.5)[:, None] / REF * Q_PER_WIDTH
            inner = comp.radial(q * comp.stretch(self.chi_cells)[None, :]).mean(axis=1)
        return float(area @ inner) / float(area.sum())

    def _beam_on(self) -> bool:
        beam = self.params["beam"]
        return 0 <= beam["x"] < 1 and 0 <= beam["y"] < 1

    def _direct_beam(self) -> Component:
        """Without a beamstop the attenuated direct beam shows as a bright spot."""
        width = 1.5 / REF * Q_PER_WIDTH
        peak = 30.0 * (self.params["signal"] + self.params["background"]["level"])
        return Component(
            "beam", _peak(0.0, width, peak), support=(0.0, 5 * width), name="direct beam"
        )

    # ---------------------------------------------------------------- visibility and tags

    def _measure(self) -> dict:
        """Visibility of every component, and the mean signal and background per valid pixel."""
        values = [self.on_cells(c) for c in self.components]
        total = self.bg_cells + FLOOR + sum(values, np.zeros_like(self.bg_cells))
        n = self.n_valid
        n_sum = max(float(n.sum()), 1.0)
        signal = float((n * (total - self.bg_cells - FLOOR)).sum()) / n_sum
        visibility = [
            self._visibility(c, v, total) for c, v in zip(self.components, values, strict=True)
        ]
        return {
            "signal_mean": signal,
            "background_mean": float((n * self.bg_cells).sum()) / n_sum,
            "shadow": self._shadow_fraction(),
            "components": visibility,
        }

    def _visibility(self, comp: Component, values: np.ndarray, total: np.ndarray) -> dict:
        lo, hi = comp.support
        k0 = int(np.searchsorted(self.q_cells, lo))
        k1 = int(np.searchsorted(self.q_cells, hi, side="right"))
        f = np.broadcast_to(values, total.shape)[k0:k1]
        other = total[k0:k1] - f
        n = self.n_valid[k0:k1]
        if comp.spotty:  # spots are narrower than 10°: judge them on 1° cells
            f = self._fine(comp, k0, k1)
            other = np.repeat(other, J_FINE // J_CELLS, axis=1)
            n = self.n_valid_fine[k0:k1]
        region = (f >= CONTRAST * other) & (n > 0)
        area = float(n[region].sum()) / REF**2
        excess, under = float((n * f)[region].sum()), float((n * other)[region].sum())
        z = excess / math.sqrt(max(under, 1e-9))
        visible = area >= MIN_AREA and z >= K_SIGMA
        return {
            "name": comp.name,
            "role": comp.role,
            "area": round(area, 5),
            "z": round(z, 2),
            "visible": bool(visible),
        }

    def _fine(self, comp: Component, k0: int, k1: int) -> np.ndarray:
        """A spotty ring's counts on 1° cells (each the mean of four sub-angles)."""
        radial = self._radial_cells(comp)[k0:k1, None]
        angular = spot_table(comp).reshape(J_FINE, -1).mean(axis=1)
        return comp.scale * radial * angular[None, :]

    def _shadow_fraction(self) -> float:
        if self.ref_transmission is None:
            return 0.0
        return float((self.ref_transmission < 0.5).mean())

    def _tags(self) -> np.ndarray:
        tags = np.zeros(len(ATTRIBUTES), dtype=np.uint8)
        for name in self._tag_names():
            tags[TAG_INDEX[name]] = 1
        return tags

    def _tag_names(self) -> set[str]:
        seen = [
            (c, v)
            for c, v in zip(self.components, self.measured["components"], strict=True)
            if v["visible"]
        ]
        names = {
            "Diffuse low-q": "lowq",
            "Structure factor": "sf",
            "Halo": "halo",
            "Diffuse high-q": "highq",
        }
        out = {tag for tag, role in names.items() if any(c.role == role for c, _ in seen)}
        rings = [c for c, _ in seen if c.role == "ring"]
        per_family: dict[str, int] = {}
        for family in {c.family for c in rings if c.family}:
            peaks = [c for c in rings if c.family == family]
            if peaks[0].order == 1:  # a sequence is read from its first peak: without it, no orders
                per_family[family] = resolved_count(peaks)
        out |= {"Ring"} if rings else set()
        out |= {"Many rings"} if resolved_count(rings) >= MANY_RINGS else set()
        out |= {"Polycrystalline"} if any(c.spotty for c in rings) else set()
        out |= {"Higher orders"} if any(v >= HIGHER_ORDERS for v in per_family.values()) else set()
        out |= {lat.upper() for lat in ("bcc", "fcc") if per_family.get(lat, 0) >= LATTICE_PEAKS}
        return out | self._instrument_tags() | self._strength_tags()

    def _instrument_tags(self) -> set[str]:
        out = set() if self._beam_on() else {"Beam Off Image"}
        beamstop = self.params["beamstop"]
        if beamstop and self.measured["shadow"] >= MIN_SHADOW:
            out.add(
                {
                    "circular": "Circ. Beamstop",
                    "linear": "Linear beamstop",
                    "wedge": "Wedge beamstop",
                }[beamstop["kind"]]
            )
        return out

    def _strength_tags(self) -> set[str]:
        s, b = self.measured["signal_mean"], self.measured["background_mean"]
        out = set()
        if s >= STRONG_RATIO * b and s >= STRONG_COUNTS:
            out.add("Strong scattering")
        if s < WEAK_RATIO * b or s < WEAK_COUNTS:
            out.add("Weak scattering")
        if b >= HIGH_BG_COUNTS and b >= HIGH_BG_SHARE * s:
            out.add("High background")
        return out

    # ---------------------------------------------------------------- rendering

    def expected(self, size: int = REF, without: tuple[int, ...] = ()) -> np.ndarray:
        """The noise-free expected counts per pixel at `size`×`size` (float64, for Poisson).

        `without` leaves out the components of those indices (to see what one feature adds).
        """
        geom = self.ref if size == REF else Geometry(size, self.params["beam"])
        trans = (
            self.ref_transmission if size == REF else transmission(geom, self.params["beamstop"])
        )
        comps = [c for i, c in enumerate(self.components) if i not in without]
        image = self._signal(geom, comps) + self._background(geom)
        if trans is not None:
            image *= trans
        image += np.float32(FLOOR)
        for x, y, counts in self.params["zingers"]:  # cosmic rays: single hot pixels
            image[min(int(y * size), size - 1), min(int(x * size), size - 1)] += counts
        np.minimum(image, np.float32(SATURATION), out=image)
        for axis, sl in gap_slices(size, self.params["gaps"]):
            image[(sl, slice(None)) if axis == "h" else (slice(None), sl)] = 0.0
        return image.astype(np.float64)

    def _background(self, geom: Geometry) -> np.ndarray:
        bg = self.params["background"]
        if np.any(bg["structure"]):
            axis = _axis(geom.size).astype(np.float64)
            field = background_field(bg, axis, axis, grid=True).astype(np.float32)
        else:
            field = np.full((geom.size, geom.size), bg["level"], dtype=np.float32)
        if bg["gain_noise"] > 0:  # pixel-to-pixel gain differences of the detector
            gain = np.random.default_rng(bg["gain_seed"]).standard_normal(field.shape, np.float32)
            field *= 1 + np.float32(bg["gain_noise"]) * gain
        return field

    def _signal(self, geom: Geometry, comps: list[Component]) -> np.ndarray:
        q_table = (np.arange(int(geom.rho_max / geom.step) + 2) + 0.5) * geom.step * Q_PER_WIDTH
        plain = [c for c in comps if c.angular is None and c.stretch is None]
        profile = sum((c.scale * c.radial(q_table) for c in plain), np.zeros_like(q_table))
        image = _pixel_average(profile, geom)[geom.radial_index]
        groups: dict[str, list[Component]] = {}
        for c in comps:
            if c.stretch is not None:
                image += self._stretched(c, geom)
            elif c.spotty:
                self._add_ring(image, c, geom, q_table)
            elif c.angular is not None:
                groups.setdefault(c.angular_key or c.name, []).append(c)
        for members in groups.values():
            profile = sum(c.scale * c.radial(q_table) for c in members)
            angular = members[0].angular(geom.angle_table).astype(np.float32)
            image += _pixel_average(profile, geom)[geom.radial_index] * angular[geom.angular_index]
        return image

    def _stretched(self, comp: Component, geom: Geometry) -> np.ndarray:
        stretch = comp.stretch(geom.angle_table).astype(np.float32)
        rho = geom.rho * stretch[geom.angular_index]
        n = int(float(rho.max()) / geom.step) + 2
        q_table = (np.arange(n) + 0.5) * geom.step * Q_PER_WIDTH
        values = _pixel_average(comp.scale * comp.radial(q_table), geom)
        out = values[(rho * np.float32(1 / geom.step)).astype(np.intp)]
        if comp.angular is not None:
            out *= comp.angular(geom.angle_table).astype(np.float32)[geom.angular_index]
        return out

    def _add_ring(self, image: np.ndarray, comp: Component, geom: Geometry, q_table) -> None:
        """Add a spotty ring over the pixels of its annulus only (they are few)."""
        order, keys = geom.by_radius
        lo, hi = (np.array(comp.support) / Q_PER_WIDTH * geom.size).clip(0, 32000)
        start, stop = np.searchsorted(keys, [int(lo), int(hi) + 1])
        pixels = order[start:stop]
        if not len(pixels):
            return
        profile = _pixel_average(comp.scale * comp.radial(q_table), geom)
        chi = geom.chi.reshape(-1)[pixels]
        angle = ((chi + np.float32(math.pi)) * np.float32(SPOT_ANGLES / (2 * math.pi))).astype(
            np.intp
        )
        angular = spot_table(comp)[np.minimum(angle, SPOT_ANGLES - 1)]
        flat = image.reshape(-1)
        flat[pixels] += profile[geom.radial_index.reshape(-1)[pixels]] * angular


def resolved_count(rings: list[Component]) -> int:
    """How many distinct rings are seen: centres closer than RESOLVE widths blend into one."""
    count, last = 0, None
    for ring in sorted(rings, key=lambda c: c.q0):
        if last is None or ring.q0 - last.q0 >= RESOLVE * max(ring.width, last.width):
            count += 1
            last = ring
    return count


def spot_table(comp: Component) -> np.ndarray:
    """A spotty ring's angular factor at SPOT_ANGLES even azimuths from −π (computed once)."""
    if comp.spot_table is None:
        comp.spot_table = comp.angular.table(SPOT_ANGLES).astype(np.float32)
    return comp.spot_table


def _pixel_average(profile: np.ndarray, geom: Geometry) -> np.ndarray:
    """A radial table averaged over one pixel's width, as a pixel integrates what falls on it.

    Without this a ring thinner than a pixel would be point-sampled into a dotted line.
    """
    box = int(round(1.0 / (geom.size * geom.step)))
    if box > 1:
        profile = np.convolve(profile, np.full(box, 1.0 / box), mode="same")
    return profile.astype(np.float32)


# ================================================================ public API


def check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise PipelineError(
            f"image size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}"
        )
    return int(size)


def draw_scene(rng: np.random.Generator, tries: int = 50) -> Scene:
    """Draw parameters until the scene carries at least one of the 17 tags (seed 001)."""
    for _ in range(tries):
        scene = Scene(draw_params(rng))
        if scene.tags.any():
            return scene
    raise RuntimeError("no tagged scene drawn; the parameter ranges are broken")


def simulate_image(
    rng: np.random.Generator, size: int = 256
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One detector image (size×size float32 counts), its 17 true tags (uint8, order of
    ATTRIBUTES), and the drawn parameters (JSON-able, with what was measured under "measured")."""
    size = check_size(size)
    scene = draw_scene(rng)
    image = np.minimum(rng.poisson(scene.expected(size)), SATURATION).astype(np.float32)
    return image, scene.tags.copy(), scene.params | {"measured": scene.measured}


def beam_pixel(params: dict, size: int) -> tuple[float, float]:
    """The beam centre as (column, row) in pixel-index coordinates (pixel (0, 0) centred at 0)."""
    return params["beam"]["x"] * size - 0.5, params["beam"]["y"] * size - 0.5


def _check_dataset_args(n, label_noise, test_fraction) -> None:
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise PipelineError(f"number of images must be a positive integer, got {n!r}")
    if not 0.0 <= label_noise <= 0.5:
        raise PipelineError(f"label noise must be a fraction from 0 to 0.5, got {label_noise!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise PipelineError(f"test fraction must be from 0 to below 1, got {test_fraction!r}")


def split_of(n: int, seed: int, test_fraction: float) -> np.ndarray:
    """'train' or 'test' per image: a seeded permutation puts round(n·fraction) in test."""
    test = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)[: round(n * test_fraction)]
    split = np.full(n, "train", dtype=object)
    split[test] = "test"
    return split


def annotation_flips(n: int, seed: int, label_noise: float) -> np.ndarray:
    """n × 17 bool: exactly round(P·n·17) (image, attribute) entries chosen to be flipped."""
    size = n * len(ATTRIBUTES)
    flips = np.zeros(size, dtype=bool)
    count = round(label_noise * size)
    flips[np.random.default_rng([seed, NOISE_STREAM]).choice(size, count, replace=False)] = True
    return flips.reshape(n, len(ATTRIBUTES))


def simulate_dataset(
    data_dir,
    n: int,
    *,
    size: int = 256,
    seed: int = 0,
    label_noise: float = 0.0,
    dataset_id: str | None = None,
    test_fraction: float = 0.2,
    progress: bool = True,
) -> Path:
    """Write a dataset through store.DatasetWriter; return its directory.

    Image i is drawn from np.random.default_rng([seed, i]), so any image can be regenerated
    alone. With label noise P, act.npy holds annotations with exactly round(P·n·17) entries
    flipped on purpose (own random stream) and true_act.npy the true tags (written always).
    """
    size = check_size(size)
    _check_dataset_args(n, label_noise, test_fraction)
    dataset_id = dataset_id or new_id(f"sim-{n}x{size}-seed{seed}")
    flips = annotation_flips(n, seed, label_noise)
    split = split_of(n, seed, test_fraction)
    meta = {
        "source": "simulate",
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "label_noise": label_noise,
        "n_flipped": int(flips.sum()),
        "test_fraction": test_fraction,
        "visibility_rule": visibility_rule(),
    }
    with DatasetWriter(data_dir, dataset_id, ATTRIBUTES, meta=meta) as ds:
        for i in tqdm(range(n), desc="simulate", unit="img", disable=not progress):
            image, tags, params = simulate_image(np.random.default_rng([seed, i]), size)
            bx, by = beam_pixel(params, size)
            ds.add(
                image,
                tags ^ flips[i],
                image_id=f"sim{seed}-{i:06d}",
                split=split[i],
                source="simulate",
                true_row=tags,
                beam_x=bx,
                beam_y=by,
                params=json.dumps(params, separators=(",", ":")),
            )
    return ds.final


def visibility_rule() -> dict:
    """The constants of the visibility rule, recorded in dataset.json."""
    return {
        "reference_grid": REF,
        "contrast": CONTRAST,
        "k_sigma": K_SIGMA,
        "min_area": MIN_AREA,
        "min_shadow": MIN_SHADOW,
        "many_rings": MANY_RINGS,
        "higher_orders": HIGHER_ORDERS,
        "lattice_peaks": LATTICE_PEAKS,
        "resolve_widths": RESOLVE,
        "strong": [STRONG_RATIO, STRONG_COUNTS],
        "weak": [WEAK_RATIO, WEAK_COUNTS],
        "high_background": [HIGH_BG_COUNTS, HIGH_BG_SHARE],
    }


# ================================================================ command line


def register(subparsers) -> None:
    from pipeline.cli import add_data_dir, non_negative_int

    p = subparsers.add_parser("simulate", help="write a synthetic SAXS/WAXS dataset with true tags")
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels, 32..1024")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="fraction of (image, attribute) annotations flipped on purpose, 0..0.5",
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--id", default=None, help="dataset id (default: a new timestamped id)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_dir(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> int:
    path = simulate_dataset(
        args.data_dir,
        args.n,
        size=args.size,
        seed=args.seed,
        label_noise=args.label_noise,
        dataset_id=args.id,
        test_fraction=args.test_fraction,
        progress=not args.quiet,
    )
    print(f"wrote {args.n} images of {args.size}×{args.size} to {path}")
    print(prevalence_table(np.load(path / "true_act.npy")))
    meta = json.loads((path / "dataset.json").read_text())
    if meta["n_flipped"]:
        print(
            f"label noise {meta['label_noise']}: {meta['n_flipped']} annotations flipped "
            f"(true tags in true_act.npy)"
        )
    return 0


def prevalence_table(tags: np.ndarray) -> str:
    """Per attribute: how many images carry it and what fraction that is."""
    lines = [f"{'attribute':20s} {'images':>7s} {'share':>6s}"]
    for name, count in zip(ATTRIBUTES, tags.sum(axis=0), strict=True):
        lines.append(f"{name:20s} {int(count):7d} {count / len(tags):6.1%}")
    return "\n".join(lines)
