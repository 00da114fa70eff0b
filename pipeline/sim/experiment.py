"""The scattering experiment a dataset comes from: transmission small-angle (SAXS), transmission
wide-angle (WAXS) or grazing-incidence small-angle (GISAXS) scattering.

An Experiment maps a pixel's distance from the beam (in detector widths) to q, and says what the
geometry does to the sample's scattering on the way to the detector:
- SAXS: q ∝ distance over Q_PER_WIDTH nm⁻¹ a width; at such small angles polarisation and the
  pixels' solid angle are flat, so nothing changes (the default, and bit for bit what the
  generator drew before experiments were named).
- WAXS: q = 4π/λ · sin(θ) with 2θ = atan(distance / D) on a flat detector, so rings crowd
  towards the edge; the sample's scattering falls with the polarisation of a synchrotron beam
  (horizontal: 1 − sin²2θ·cos²χ, weaker left and right of the beam) and with each pixel's solid
  angle (cos³2θ). Liquids and amorphous solids add their halo near 14 nm⁻¹.
- GISAXS: the beam grazes a film. Below the sample horizon the film shadows its own scattering;
  just above it the Yoneda band brightens it (exit at the critical angle); the specular rod
  runs up from the beam through the reflected beam. The small-angle q map is SAXS's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sim.rules import Q_PER_WIDTH, REF

EXPERIMENTS = {
    "saxs": "transmission small-angle scattering, q ∝ distance (2 nm⁻¹ across the detector)",
    "waxs": "transmission wide-angle scattering, 2θ up to 30° (λ = 0.1 nm), polarisation and "
    "solid angle, amorphous halos near 14 nm⁻¹",
    "gisaxs": "grazing incidence on a film: sample horizon, Yoneda band, specular rod",
}
DEFAULT_EXPERIMENT = "saxs"

WAVELENGTH = 0.1  # nm (12.4 keV)
WAXS_DISTANCE = math.sqrt(3.0)  # detector widths from the sample: 2θ = 30° one width out
K = 4 * math.pi / WAVELENGTH
# The modules are drawn on SAXS's q scale; a wide-angle detector sees them this many times
# farther out in q (the same structure this many times smaller), which keeps each feature at
# about the same place on the detector near the beam.
WAXS_Q_SCALE = K / (2 * WAXS_DISTANCE) / Q_PER_WIDTH
HALO_Q = (12.5, 15.5)  # nm⁻¹: the first peak of water, polymers and glasses
HALO_WIDTH = (1.5, 3.0)  # nm⁻¹ (Gaussian σ)
HORIZON_EDGE = 1.0 / REF  # the film's edge blurs the horizon over about a pixel
HORIZON_FLOOR = 1e-3  # what passes under the horizon (refraction through the film's edge)


def check_experiment(name: str) -> str:
    if name not in EXPERIMENTS:
        raise PipelineError(f"unknown experiment {name!r}: choose one of {', '.join(EXPERIMENTS)}")
    return name


@dataclass(frozen=True)
class Experiment:
    """What the geometry of one image's experiment does: its q map and the factors on the
    sample's scattering. `grazing` holds GISAXS's drawn horizon, band and rod (else None)."""

    kind: str = DEFAULT_EXPERIMENT
    grazing: dict | None = None

    @property
    def q_scale(self) -> float:
        return WAXS_Q_SCALE if self.kind == "waxs" else 1.0

    def q(self, rho):
        """q (nm⁻¹) at signed distance rho from the beam (detector widths); odd in rho."""
        if self.kind != "waxs":
            return rho * Q_PER_WIDTH
        return K * np.sin(np.arctan(np.asarray(rho, dtype=np.float64) / WAXS_DISTANCE) / 2)

    def rho(self, q):
        """The distance from the beam at which q is seen (inf beyond the largest angle)."""
        if self.kind != "waxs":
            return np.asarray(q, dtype=np.float64) / Q_PER_WIDTH
        s = np.asarray(q, dtype=np.float64) / K
        with np.errstate(invalid="ignore"):
            two_theta = np.where(np.abs(s) < 1, 2 * np.arcsin(np.clip(s, -1, 1)), np.inf)
            return np.where(two_theta < math.pi / 2, WAXS_DISTANCE * np.tan(two_theta), np.inf)

    @property
    def shapes_signal(self) -> bool:
        """Whether the geometry changes the sample's scattering across the detector."""
        return self.kind != "saxs"

    def signal_factor(self, dx, dy) -> np.ndarray:
        """What reaches a pixel at offset (dx, dy) from the beam (detector widths, y down) of
        the sample's scattering, relative to SAXS."""
        if self.kind == "waxs":
            rho2 = dx**2 + dy**2
            cos2t = WAXS_DISTANCE / np.sqrt(WAXS_DISTANCE**2 + rho2)  # cos 2θ
            sin2t_cos_chi2 = dx**2 / (WAXS_DISTANCE**2 + rho2)  # (sin 2θ · cos χ)²
            return ((1 - sin2t_cos_chi2) * cos2t**3).astype(np.float32)
        if self.kind == "gisaxs":
            return (self.horizon(dy) * self.yoneda(dy)).astype(np.float32)
        return np.ones(np.broadcast_shapes(np.shape(dx), np.shape(dy)), dtype=np.float32)

    def horizon(self, dy) -> np.ndarray:
        """Transmission of the film's own shadow: 1 above the horizon, HORIZON_FLOOR below."""
        below = np.clip(0.5 + (dy - self.grazing["horizon"]) / HORIZON_EDGE, 0, 1)
        return 1 - (1 - HORIZON_FLOOR) * below

    def yoneda(self, dy) -> np.ndarray:
        g = self.grazing
        return 1 + g["yoneda_gain"] * np.exp(-0.5 * ((dy - g["yoneda"]) / g["yoneda_sigma"]) ** 2)

    def specular_rod(self, dx, dy) -> np.ndarray:
        """Counts of the specular rod: a narrow line straight up from the beam (y < 0), falling
        as the reflectivity does (q⁻⁴ past the critical angle), with the reflected beam on it."""
        g = self.grazing
        across = np.exp(-0.5 * (dx / g["rod_width"]) ** 2)
        height = np.maximum(-dy, 0.0)
        fall = (1 + (height / g["specular"]) ** 2) ** -2.0
        rod = g["rod_counts"] * fall * (dy < 0)
        spot = np.exp(-0.5 * ((dy + g["specular"]) ** 2) / g["rod_width"] ** 2)
        return (across * (rod + g["specular_counts"] * spot)).astype(np.float32)


def experiment_of(params: dict) -> Experiment:
    """The experiment of drawn parameters (those drawn before experiments were named: SAXS)."""
    setup = params.get("experiment")
    if not setup:
        return Experiment()
    return Experiment(setup["kind"], setup.get("grazing"))


def draw_grazing(rng: np.random.Generator) -> dict:
    """A grazing-incidence geometry, in detector widths above (−) the direct beam: the
    reflected beam at 2αi, the horizon at αi, the Yoneda band at αi + αc."""
    specular = float(rng.uniform(0.04, 0.1))  # 2αi at the detector
    critical = float(rng.uniform(0.25, 0.6) * specular)  # αc, comparable to αi
    return {
        "horizon": -specular / 2,
        "specular": specular,
        "yoneda": -specular / 2 - critical,
        "yoneda_sigma": float(rng.uniform(0.004, 0.01)),
        "yoneda_gain": float(rng.uniform(2.0, 4.0)),  # |T(αf)|² peaks near 4 at αc
        "rod_width": float(rng.uniform(0.6, 1.2) / REF),
        "rod_counts": float(math.exp(rng.uniform(math.log(300), math.log(3e4)))),
        "specular_counts": float(math.exp(rng.uniform(math.log(1e4), math.log(1e6)))),
    }


def draw_grazing_beam(rng: np.random.Generator) -> dict:
    """The direct beam of a GISAXS image: low on the detector, so the film's scattering above
    the horizon fills it."""
    return {"x": float(rng.uniform(0.35, 0.65)), "y": float(rng.uniform(0.8, 0.92))}


def draw_amorphous_halo(rng: np.random.Generator) -> dict:
    """A WAXS amorphous halo, on the drawing's SAXS q scale (WAXS_Q_SCALE moves it out)."""
    return {
        "kind": "halo",
        "q0": float(rng.uniform(*HALO_Q) / WAXS_Q_SCALE),
        "width": float(rng.uniform(*HALO_WIDTH) / WAXS_Q_SCALE),
    }
