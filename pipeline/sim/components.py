"""The scattering components of a scene as functions of q and χ, built from the drawn modules:
form factors, structure-factor peaks, lattice and ring sequences, halos, diffuse high-q."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import physics


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


def peak_profile(q0: float, width: float, height: float = 1.0) -> Callable:
    return lambda q: height * physics.gaussian_peak(q, q0, width)


def _texture_angular(texture: dict, index: int, q0: float, width: float):
    """The angular factor of ring `index` of a module, and whether it is spotty."""
    if texture["kind"] == "arcs":
        eta, chi0, lobes = texture["eta"], texture["chi0"], texture["symmetry"]
        return (lambda chi: physics.wrapped_cauchy(chi, chi0, eta, lobes)), "arcs", False
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
                peak_profile(q0, width, height),
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
    lobes = aniso["symmetry"]
    return (lambda chi: physics.wrapped_cauchy(chi, aniso["chi0"], aniso["eta"], lobes)), key


def _build_halo(m: dict) -> list[Component]:
    angular, key = _aniso_angular(m.get("aniso"), "halo")
    return [
        Component(
            "halo",
            peak_profile(m["q0"], m["width"]),
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
