"""A Scene: one image's components on its geometry and detector; it decides the tags by the
visibility rule and renders the expected (noise-free) counts at any size."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cached_property

import numpy as np

from pipeline.attributes import ATTRIBUTES
from pipeline.sim.beamline import parasitic, streak_cells, streak_pixels, window_transmission
from pipeline.sim.components import BUILDERS, Component, peak_profile
from pipeline.sim.detector import flat_field, gap_mask, get_detector
from pipeline.sim.experiment import experiment_of
from pipeline.sim.geometry import (
    Geometry,
    background_field,
    cell_ids,
    pixel_axis,
    transmission,
)
from pipeline.sim.indexing import indexes_as, resolved_count
from pipeline.sim.rules import (
    BEAM_SIGMA,
    CONTRAST,
    FLOOR,
    HIGH_BG_COUNTS,
    HIGH_BG_SHARE,
    HIGHER_ORDERS,
    J_CELLS,
    J_FINE,
    K_SIGMA,
    LEAK,
    MANY_RINGS,
    MIN_AREA,
    MIN_SHADOW,
    NORM_RADIUS,
    REF,
    SPOT_ANGLES,
    STRONG_COUNTS,
    STRONG_RATIO,
    TAG_INDEX,
    WEAK_COUNTS,
    WEAK_RATIO,
)


class Scene:
    """A scene built from drawn parameters: its components, its tags, its expected image.

    Everything here is deterministic; tags are judged on the 256² reference grid, so a scene
    has the same tags at any rendered size.
    """

    def __init__(self, params: dict):
        self.params = params
        self.detector = get_detector(params["detector"])
        self.experiment = experiment_of(params)
        self.ref = Geometry(REF, params["beam"])
        self.ref_transmission = transmission(self.ref, params["beamstop"])
        self.ref_window = self._window(REF)
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
        self.rho_cells = (np.arange(n_k) + 0.5) / REF
        self.q_cells = self.experiment.q(self.rho_cells)
        self.chi_cells = -math.pi + (np.arange(J_CELLS) + 0.5) * (2 * math.pi / J_CELLS)
        self.bg_cells = self._background_cells(n_k)
        self.par_cells = self._parasitic_cells()

    def _parasitic_cells(self) -> np.ndarray:
        """Parasitic scatter and slit streaks on the cells: background under every feature."""
        p, rho = self.params["parasitic"], self.rho_cells
        cells = np.repeat(parasitic(rho, p)[:, None], J_CELLS, axis=1)
        for streak in p["streaks"]:
            cells += streak_cells(rho, self.chi_cells, streak, p["core"])
        if self.experiment.grazing:
            cells += self._over_cells(self.experiment.specular_rod, J_CELLS)
        return cells

    def _over_cells(self, field, n_angles: int) -> np.ndarray:
        """A field of (dx, dy) averaged over the polar cells: 16 azimuths in each."""
        step = 2 * math.pi / n_angles
        chi = -math.pi + (np.arange(n_angles * 16) + 0.5) * (step / 16)
        rho = self.rho_cells[:, None]
        values = field(rho * np.cos(chi)[None, :], rho * np.sin(chi)[None, :])
        return values.reshape(len(self.rho_cells), n_angles, 16).mean(axis=2)

    @cached_property
    def _factor_cells(self) -> np.ndarray:
        """The experiment's factor on the sample's scattering, over the 10° cells."""
        return self._over_cells(self.experiment.signal_factor, J_CELLS)

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
        """Pixels on which features can be seen: not in the beamstop's or the flight tube's
        shadow, not in a gap between detector modules."""
        geom = self.ref if size == REF else Geometry(size, self.params["beam"])
        trans = (
            self.ref_transmission if size == REF else transmission(geom, self.params["beamstop"])
        )
        return self._valid(size, trans)

    def _valid(self, size: int, trans: np.ndarray | None) -> np.ndarray:
        valid = np.ones((size, size), dtype=bool) if trans is None else trans > 0.5
        window = self.ref_window if size == REF else self._window(size)
        if window is not None:
            valid &= window > 0.5
        if self.experiment.grazing:  # nothing of the film is seen under its horizon
            dy = pixel_axis(size)[:, None] - np.float32(self.params["beam"]["y"])
            valid &= self.experiment.horizon(dy) > 0.5
        return valid & ~gap_mask(self.detector.name, size)

    def _window(self, size: int) -> np.ndarray | None:
        axis = pixel_axis(size)
        return window_transmission(axis[None, :], axis[:, None], self.params["window"])

    def on_cells(self, comp: Component) -> np.ndarray:
        """A component's expected counts on the reference cells: (K, 1) or (K, J)."""
        if comp.cells is None:
            comp.cells = self._evaluate_cells(comp)
        if self.experiment.shapes_signal and comp.role != "beam":
            return comp.scale * comp.cells * self._factor_cells
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
        return np.abs(self.experiment.q((np.arange(4 * n_k + 8) - 4 + 0.5) / (4 * REF)))

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
        scale = self.experiment.q_scale
        for m in modules:
            parts = BUILDERS[m["kind"]](m)
            if scale != 1.0:
                parts = [scaled(c, scale) for c in parts]
            mean = sum(self._disc_mean(c) for c in parts)
            if mean <= 1e-12:  # nothing of it falls near the beam: leave it out
                continue
            for c in parts:
                c.scale = self.params["signal"] * m["weight"] / total_weight / mean
            out.extend(c for c in parts if c.support[0] <= q_edge)
        beamstop = self.params["beamstop"]
        if self._beam_on() and (beamstop is None or beamstop["transmission"] > LEAK):
            out.append(self._direct_beam())
        return out

    def _disc_mean(self, comp: Component) -> float:
        """A component's mean over the disc ρ < NORM_RADIUS around the beam (scale 1).

        Angular factors have mean 1, so only stretched components need their azimuths.
        """
        k = int(NORM_RADIUS * REF)
        area = 2 * np.arange(k) + 1.0  # annulus areas in units of π/J reference pixels
        if comp.stretch is None:
            q = self.experiment.q((np.arange(k) + 0.5) / REF)
            inner = comp.radial(q)
        else:
            q = self.experiment.q((np.arange(k) + 0.5)[:, None] / REF)
            inner = comp.radial(q * comp.stretch(self.chi_cells)[None, :]).mean(axis=1)
        return float(area @ inner) / float(area.sum())

    def _beam_on(self) -> bool:
        beam = self.params["beam"]
        return 0 <= beam["x"] < 1 and 0 <= beam["y"] < 1

    def _direct_beam(self) -> Component:
        """The direct beam: saturating without a beamstop, a dim spot through a thin one."""
        width = float(self.experiment.q(BEAM_SIGMA))
        peak = self.params["direct_beam"]
        return Component(
            "beam", peak_profile(0.0, width, peak), support=(0.0, 5 * width), name="direct beam"
        )

    # ---------------------------------------------------------------- visibility and tags

    def _measure(self) -> dict:
        """Visibility of every component, and the mean signal and background per valid pixel."""
        values = [self.on_cells(c) for c in self.components]
        below = self.bg_cells + self.par_cells + FLOOR
        total = below + sum(values, np.zeros_like(below))
        n = self.n_valid
        n_sum = max(float(n.sum()), 1.0)
        sample = [v for c, v in zip(self.components, values, strict=True) if c.role != "beam"]
        signal = float((n * sum(sample, np.zeros_like(below))).sum()) / n_sum
        visibility = [
            self._visibility(c, v, total) for c, v in zip(self.components, values, strict=True)
        ]
        return {
            "signal_mean": signal,
            "background_mean": float((n * self.bg_cells).sum()) / n_sum,
            "parasitic_mean": float((n * self.par_cells).sum()) / n_sum,
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
        under += self.detector.read_variance * float(n[region].sum())  # a CCD's read noise
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
        if self.experiment.shapes_signal:
            factor = self._over_cells(self.experiment.signal_factor, J_FINE)[k0:k1]
            return comp.scale * radial * angular[None, :] * factor
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
        per_family: dict[str, list[Component]] = {}
        for family in {c.family for c in rings if c.family}:
            peaks = [c for c in rings if c.family == family]
            if peaks[0].order == 1:  # a sequence is read from its first peak: without it, no orders
                per_family[family] = peaks
        out |= {"Ring"} if rings else set()
        out |= {"Many rings"} if resolved_count(rings) >= MANY_RINGS else set()
        out |= {"Polycrystalline"} if any(c.spotty for c in rings) else set()
        if any(resolved_count(peaks) >= HIGHER_ORDERS for peaks in per_family.values()):
            out.add("Higher orders")
        out |= {lat.upper() for lat in ("bcc", "fcc") if indexes_as(per_family.get(lat, []), lat)}
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
        image = self._signal(geom, comps) + self._background(geom) + self._parasitic(geom)
        if trans is not None:
            image *= trans
        window = self.ref_window if size == REF else self._window(size)
        if window is not None:
            image *= window
        image += np.float32(FLOOR)
        for x, y, counts in self.params["zingers"]:  # cosmic rays: single hot pixels
            image[min(int(y * size), size - 1), min(int(x * size), size - 1)] += counts
        image *= flat_field(self.detector.name, size)
        image[gap_mask(self.detector.name, size)] = 0.0
        return image.astype(np.float64)

    def _parasitic(self, geom: Geometry) -> np.ndarray:
        """Parasitic scatter from a radial table (pixel-averaged), plus the slit streaks."""
        p = self.params["parasitic"]
        rho_table = (np.arange(int(geom.rho_max / geom.step) + 2) + 0.5) * geom.step
        image = _pixel_average(parasitic(rho_table, p), geom)[geom.radial_index]
        for streak in p["streaks"]:
            image += streak_pixels(geom.dx, geom.dy, streak, p["core"])
        if self.experiment.grazing:
            image += self.experiment.specular_rod(geom.dx, geom.dy)
        return image

    def _background(self, geom: Geometry) -> np.ndarray:
        bg = self.params["background"]
        if np.any(bg["structure"]):
            axis = pixel_axis(geom.size).astype(np.float64)
            field = background_field(bg, axis, axis, grid=True).astype(np.float32)
        else:
            field = np.full((geom.size, geom.size), bg["level"], dtype=np.float32)
        if bg["gain_noise"] > 0:  # pixel-to-pixel gain differences of the detector
            gain = np.random.default_rng(bg["gain_seed"]).standard_normal(field.shape, np.float32)
            # A gain is never below zero: a pixel drawn 5σ low (a few images in 10,000) is dead.
            field *= np.maximum(1 + np.float32(bg["gain_noise"]) * gain, 0)
        return field

    def _signal(self, geom: Geometry, comps: list[Component]) -> np.ndarray:
        """The sample's scattering, shaped by the experiment's geometry, and the direct beam."""
        if not self.experiment.shapes_signal:
            return self._scattering(geom, comps)
        sample = [c for c in comps if c.role != "beam"]
        image = self._scattering(geom, sample) * self.experiment.signal_factor(geom.dx, geom.dy)
        beam = [c for c in comps if c.role == "beam"]
        return image + self._scattering(geom, beam) if beam else image

    def _scattering(self, geom: Geometry, comps: list[Component]) -> np.ndarray:
        rho_table = (np.arange(int(geom.rho_max / geom.step) + 2) + 0.5) * geom.step
        q_table = np.abs(self.experiment.q(rho_table))
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
        q_table = self.experiment.q((np.arange(n) + 0.5) * geom.step)
        values = _pixel_average(comp.scale * comp.radial(q_table), geom)
        out = values[(rho * np.float32(1 / geom.step)).astype(np.intp)]
        if comp.angular is not None:
            out *= comp.angular(geom.angle_table).astype(np.float32)[geom.angular_index]
        return out

    def _add_ring(self, image: np.ndarray, comp: Component, geom: Geometry, q_table) -> None:
        """Add a spotty ring over the pixels of its annulus only (they are few)."""
        order, keys = geom.by_radius
        lo, hi = (self.experiment.rho(np.array(comp.support)) * geom.size).clip(0, 32000)
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


def scaled(comp: Component, factor: float) -> Component:
    """The component of the same structure `factor` times smaller: seen `factor` times farther
    out in q, every peak's centre and width with it (shapes and peak ratios are kept)."""
    radial = comp.radial
    lo, hi = comp.support
    return replace(
        comp,
        radial=lambda q: radial(q / factor),
        support=(lo * factor, hi * factor),
        q0=comp.q0 * factor,
        width=comp.width * factor,
    )


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
