"""Drawing one image's parameters: beam, beamstop, background, parasitic scatter, flight-tube
window and the scattering modules (the only random step of the simulator besides the detector's
Poisson and read noise)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pipeline import physics
from pipeline.sim.detector import gap_mask, get_detector
from pipeline.sim.experiment import (
    DEFAULT_EXPERIMENT,
    draw_amorphous_halo,
    draw_grazing,
    draw_grazing_beam,
)
from pipeline.sim.rules import GENERATOR_VERSION, LEAK, Q_PER_WIDTH, REF


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


def _draw_beam_on_a_module(rng, detector: str, draw: Callable = _draw_beam) -> dict:
    """A beam position, never inside a gap between modules: users put the beam on a module,
    or its low-q data would be lost in the gap."""
    dead = gap_mask(detector, REF)
    for _ in range(20):
        beam = draw(rng)
        col, row = int(beam["x"] * REF), int(beam["y"] * REF)
        if not (0 <= col < REF and 0 <= row < REF) or not dead[row, col]:
            return beam
    raise RuntimeError(f"no beam position off the gaps of {detector}")


def _draw_beamstop(rng, beam) -> dict | None:
    """A beamstop on the beam, as small as real ones: a rod (0.6–2 % of the width), a disc of
    2–5 % on a thin arm, or a wedge; with a penumbra, and sometimes semi-transparent."""
    if not (0 <= beam["x"] < 1 and 0 <= beam["y"] < 1):
        return None
    u = rng.random()
    penumbra = float(rng.uniform(1.0, 2.0) / REF)
    # a stop must be at least two penumbrae wide, or its middle would not be dark
    common = {
        "penumbra": penumbra,
        "transmission": LEAK if rng.random() < 0.7 else _log_uniform(rng, 3e-5, 1e-3),
    }
    if u < 0.36:
        radius = float(rng.uniform(0.01, 0.025))
        return common | {
            "kind": "circular",
            "radius": radius,
            "offset": [float(v) for v in rng.normal(0, 0.002, 2)],
            "arm_angle": _direction(rng),
            "arm_width": min(max(float(rng.uniform(0.005, 0.012)), 2 * penumbra), radius),
        }
    if u < 0.66:
        width = max(float(rng.uniform(0.006, 0.02)), 2 * penumbra)
        return common | {
            "kind": "linear",
            "width": width,
            "angle": _direction(rng),
            "overhang": float(width * rng.uniform(0.3, 1.0)),
        }
    if u < 0.88:
        half = math.radians(rng.uniform(3, 9))
        return common | {
            "kind": "wedge",
            "half_angle": float(half),
            "angle": _direction(rng),
            "apex": max(float(rng.uniform(0.03, 0.08)), 1.5 * penumbra / math.tan(half)),
        }
    return None


def _draw_parasitic(rng, flux: float, cap: float) -> dict:
    """Slit and air scatter around the beam, 10^1.8–10^3.2 times the sample's mean counts at
    PARASITIC_REF, falling steeply as ρ^−(4…5.5) so that it dominates only beside the beamstop
    (where real images are brightest); slit streaks along the detector axes half the time.

    A detector that blooms is exposed so that no more than a small disc saturates (cap).
    """
    edge = min(flux * 10 ** float(rng.uniform(1.8, 3.2)), cap)
    p = {
        "edge": edge,
        "exponent": float(rng.uniform(4.0, 5.5)),
        "core": float(rng.uniform(0.004, 0.01)),
        "streaks": [],
    }
    if rng.random() < 0.5:
        first = int(rng.integers(2))
        for k in range(int(rng.integers(1, 3))):
            p["streaks"].append(
                {
                    "angle": float((first + k) * math.pi / 2 + rng.normal(0, 0.01)),
                    "counts": edge * 10 ** float(rng.uniform(-0.7, 0.3)),
                    "width": float(rng.uniform(0.6, 1.5) / REF),
                    "exponent": float(rng.uniform(1.5, 2.5)),
                }
            )
    return p


def _draw_window(rng) -> dict | None:
    """The flight tube's round exit window, shadowing the detector's corners (30 %)."""
    if rng.random() > 0.3:
        return None
    x, y = 0.5 + rng.normal(0, 0.04, 2)
    return {"x": float(x), "y": float(y), "radius": float(rng.uniform(0.55, 0.68))}


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


# Orientation order: fibres and sheared samples give two arcs; square and hexagonal
# mesophases aligned along the beam give four and six. Sharper arcs for fewer lobes, so every
# lobe stays about as wide as the 10° cells that judge visibility.
SYMMETRIES = ((2, 0.6, 0.85), (4, 0.25, 0.75), (6, 0.15, 0.65))  # lobes, share, largest η


def _orientation(rng, low: float, scale: float = 1.0) -> dict:
    """Lobes (2, 4 or 6), η from `low` to the symmetry's largest × scale, and the direction."""
    k = int(rng.choice(len(SYMMETRIES), p=[share for _, share, _ in SYMMETRIES]))
    lobes, _, top = SYMMETRIES[k]
    return {
        "symmetry": lobes,
        "eta": float(rng.uniform(low, max(low, top * scale))),
        "chi0": float(rng.uniform(0, math.pi)),
    }


def _draw_texture(rng, n_rings: int, p_arcs: float, p_spots: float) -> dict:
    u = rng.random()
    if u < p_arcs:  # an oriented sample: every order in the same arcs
        return {"kind": "arcs"} | _orientation(rng, 0.4)
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
        "radius": float(diameter / 2 / rng.uniform(1.2, 1.7)),
        "phi": float(rng.uniform(0.32, 0.49)),
        "polydispersity": float(rng.uniform(0.03, 0.1)),
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
        m["aniso"] = _orientation(rng, 0.2, 0.7)
    return m


def _draw_highq(rng) -> dict:
    # σq = 1 a third to a half of the width from the beam: the rise is seen on the detector,
    # not only a plateau that would pass for a high background
    m = {"kind": "highq", "sigma": float(1 / (rng.uniform(0.3, 0.6) * Q_PER_WIDTH))}
    if rng.random() < 0.3:
        m["aniso"] = _orientation(rng, 0.2, 0.6)
    return m


# Each module appears independently with its probability (Wang et al., WACV 2017: "a random
# set of modules").
MODULE_DRAWS: tuple[tuple[float, Callable], ...] = (
    (0.15, _draw_lowq),
    (0.28, _draw_suspension),
    (0.32, _draw_lattice),
    (0.32, _draw_rings),
    (0.30, _draw_halo),
    (0.25, _draw_highq),
)


def _exposure_cap(detector: str) -> float:
    """Counts at PARASITIC_REF above which an exposure would bloom a CCD across the image."""
    return get_detector(detector).full_well / 20


# Wide-angle scattering sees the amorphous halo of liquids, polymers and glasses more often
# than small-angle scattering sees a halo, and always near 14 nm⁻¹.
WAXS_MODULE_DRAWS = tuple(
    (0.45, draw_amorphous_halo) if draw is _draw_halo else (p, draw) for p, draw in MODULE_DRAWS
)


def draw_params(
    rng: np.random.Generator, detector: str = "pilatus", experiment: str = DEFAULT_EXPERIMENT
) -> dict:
    """All random choices of one image (JSON-able); `Scene(params)` is then deterministic.

    SAXS parameters carry no "experiment" key, so they are those drawn before experiments were
    named, bit for bit."""
    grazing = experiment == "gisaxs"
    beam = _draw_beam_on_a_module(rng, detector, draw_grazing_beam if grazing else _draw_beam)
    modules = []
    for probability, draw in WAXS_MODULE_DRAWS if experiment == "waxs" else MODULE_DRAWS:
        if rng.random() < probability:
            modules.append(draw(rng) | {"weight": _log_uniform(rng, 0.05, 1.0)})
    zingers = [
        [float(v) for v in rng.random(2)] + [_log_uniform(rng, 1e3, 1e5)]
        for _ in range(int(rng.integers(1, 6)) if rng.random() < 0.15 else 0)
    ]
    signal, background = _log_uniform(rng, 0.3, 800), _draw_background(rng)
    params = {
        "version": GENERATOR_VERSION,
        "detector": detector,
        "beam": beam,
        "signal": signal,
        "background": background,
        "modules": modules,
        "beamstop": _draw_beamstop(rng, beam),
        "parasitic": _draw_parasitic(rng, signal + background["level"], _exposure_cap(detector)),
        "direct_beam": _log_uniform(rng, 3e6, 1e8),
        "window": _draw_window(rng),
        "zingers": zingers,
    }
    if experiment != DEFAULT_EXPERIMENT:
        params["experiment"] = {
            "kind": experiment,
            "grazing": draw_grazing(rng) if grazing else None,
        }
    return params
