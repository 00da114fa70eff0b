"""Physics-grounded synthetic SAXS/WAXS detector images whose 17 tags follow from what is visible.

`simulate_image` draws one image, `simulate_dataset` writes many through the run store, and
`python -m pipeline simulate` is the command line for both.

How an image is made: parameters are drawn first (`draw_params`, the only random step besides
the detector's noise); `Scene(params)` builds the scattering modules as functions of q and χ
around the beam centre on a size-independent q-map (the detector is Q_PER_WIDTH nm⁻¹ wide
at any pixel count), decides the tags, and renders the expected counts at any size; the
dataset's detector model (pipeline.sim.detector: a Pilatus-like photon counter with fixed
module gaps, or a CCD with read noise and blooming) then records them.

What a beamline adds, as real images show it: parasitic and air scatter brightest beside the
beamstop and falling steeply with q, streaks from the slits, the flight tube's window shadowing
the corners, a direct beam that saturates when unblocked (or shows dimly through a
semi-transparent stop), beamstops of real size with a penumbra, and the detector's flat-field
residue (pipeline.sim.beamline, geometry, detector). A dataset names its experiment
(pipeline.sim.experiment): small-angle (the default), wide-angle or grazing-incidence.

The visibility rule (the tags' honesty). Each feature f is judged on the expected (noise-free)
image, on the 256×256 reference grid in polar cells of one pixel × 10° (1° for the spots of a
polycrystalline ring), counting only pixels that are on the detector and neither shadowed
(beamstop, flight tube) nor in a module gap; cell values average over each pixel's width as a
detector pixel does. Let F be its expected counts and O those of everything else (background,
parasitic scatter, dark counts, all other features). Its region R is where F ≥ CONTRAST·O.
f is visible when R covers at least MIN_AREA of the detector and
ΣR F ≥ K_SIGMA·√(ΣR O + n_R·σ²), i.e. its excess counts are significant against the Poisson
noise of what lies under it and the read noise σ of the detector (0 for a photon counter) over
its n_R pixels. (Judged pixel by pixel on rendered images instead, the rule gave the same
answer for 99.5 % of features in generator version 1; the rest sat at the MIN_AREA boundary.)

Counts: "Ring" = at least one visible sharp ring (lattice reflection, ring-sequence order, or
single ring; spotty rings included); "Many rings" = MANY_RINGS or more; "Higher orders" = one
sequence (BCC, FCC, lamellar, hexagonal) with HIGHER_ORDERS or more visible peaks; "BCC"/"FCC" =
LATTICE_PEAKS or more seen rings of that lattice that no other sequence (lamellar, hexagonal,
the other cubic lattice) explains within INDEX_TOLERANCE ring widths (pipeline.sim.indexing: two
rings give one ratio, which names no lattice). A sequence counts only if its first peak is
visible: without it no peak can be indexed. Visible rings closer than RESOLVE widths count as
one, as they blend into one broad ring; "Polycrystalline" = a visible spotty ring. Beamstop tags
need MIN_SHADOW of the detector in shadow; the beamstop sits on the beam, so an image whose beam
centre is off the detector ("Beam Off Image") has none. Scattering strength compares the mean
sample signal S (the direct beam left out) with the mean flat background B (air scatter and
fluorescence; not the parasitic scatter beside the stop, which every image has) per valid pixel:
"Strong scattering" when S ≥ STRONG_RATIO·B and S ≥ STRONG_COUNTS; "Weak scattering" when S <
WEAK_RATIO·B or S < WEAK_COUNTS (in between: neither); "High background" when B ≥ HIGH_BG_COUNTS
and B ≥ HIGH_BG_SHARE·S.
"""

import json
from itertools import repeat
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import pool
from pipeline.attributes import ATTRIBUTES
from pipeline.errors import PipelineError
from pipeline.sim.detector import DEFAULT_DETECTOR, get_detector, record
from pipeline.sim.experiment import DEFAULT_EXPERIMENT, EXPERIMENTS, check_experiment
from pipeline.sim.params import draw_params
from pipeline.sim.rules import (
    CONTRAST,
    GENERATOR_VERSION,
    HIGH_BG_COUNTS,
    HIGH_BG_SHARE,
    HIGHER_ORDERS,
    INDEX_TOLERANCE,
    K_SIGMA,
    LATTICE_PEAKS,
    MANY_RINGS,
    MAX_SIZE,
    MIN_AREA,
    MIN_SHADOW,
    MIN_SIZE,
    NOISE_STREAM,
    REF,
    RESOLVE,
    SPLIT_STREAM,
    STRONG_COUNTS,
    STRONG_RATIO,
    WEAK_COUNTS,
    WEAK_RATIO,
)
from pipeline.sim.scene import Scene
from pipeline.store import DatasetWriter, new_id

# From this many images on, a pool of processes (one per core) draws the images, in order, while
# this process alone writes them: the dataset is the same, byte for byte (image i is drawn from
# its own random stream). A worker takes about a second to start; one image about 10 ms.
PARALLEL_MIN = 500
POOL_CHUNK = 8  # images a worker draws per task
AHEAD = 2  # tasks per worker handed out ahead of the writer: 16 images of up to 4 MB wait each


def check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise PipelineError(
            f"image size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}"
        )
    return int(size)


def draw_scene(
    rng: np.random.Generator,
    detector: str = DEFAULT_DETECTOR,
    tries: int = 50,
    experiment: str = DEFAULT_EXPERIMENT,
) -> Scene:
    """Draw parameters until the scene carries at least one of the 17 tags."""
    for _ in range(tries):
        scene = Scene(draw_params(rng, detector, experiment))
        if scene.tags.any():
            return scene
    raise RuntimeError("no tagged scene drawn; the parameter ranges are broken")


def simulate_image(
    rng: np.random.Generator,
    size: int = 256,
    detector: str = DEFAULT_DETECTOR,
    experiment: str = DEFAULT_EXPERIMENT,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One detector image (size×size float32 counts), its 17 true tags (uint8, order of
    ATTRIBUTES), and the drawn parameters (JSON-able, with what was measured under "measured")."""
    size = check_size(size)
    get_detector(detector)  # an unknown name fails before anything is drawn
    check_experiment(experiment)
    scene = draw_scene(rng, detector, experiment=experiment)
    image = record(scene.expected(size), rng, detector)
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
    detector: str = DEFAULT_DETECTOR,
    experiment: str = DEFAULT_EXPERIMENT,
) -> Path:
    """Write a dataset through store.DatasetWriter; return its directory.

    Image i is drawn from np.random.default_rng([seed, i]), so any image can be regenerated
    alone. Every image is recorded by the same `detector` (its gaps and flat field are the
    detector's own, the same in every frame). With label noise P, act.npy holds annotations
    with exactly round(P·n·17) entries flipped on purpose (own random stream) and true_act.npy
    the true tags (written always). From PARALLEL_MIN images on, a pool of processes draws them.
    """
    size = check_size(size)
    _check_dataset_args(n, label_noise, test_fraction)
    model = get_detector(detector)
    check_experiment(experiment)
    dataset_id = dataset_id or new_id(f"sim-{n}x{size}-seed{seed}")
    flips = annotation_flips(n, seed, label_noise)
    split = split_of(n, seed, test_fraction)
    meta = {
        "source": "simulate",
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "detector": {"name": model.name, "summary": model.summary},
        "experiment": {"name": experiment, "summary": EXPERIMENTS[experiment]},
        "label_noise": label_noise,
        "n_flipped": int(flips.sum()),
        "test_fraction": test_fraction,
        "visibility_rule": visibility_rule(),
    }
    workers = pool.workers_for(n, PARALLEL_MIN)
    with (DatasetWriter(data_dir, dataset_id, ATTRIBUTES, meta=meta) as ds,
          pool.ordered_map(workers, chunk=POOL_CHUNK, ahead=AHEAD) as mapped):
        drawn = mapped(_draw, range(n), repeat(seed), repeat(size), repeat(detector),
                       repeat(experiment))
        for i, (image, tags, params) in enumerate(
                tqdm(drawn, total=n, desc="simulate", unit="img", disable=not progress)):
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


def _draw(i: int, seed: int, size: int, detector: str, experiment: str
          ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Image i of a dataset of this seed: the same in any process."""
    return simulate_image(np.random.default_rng([seed, i]), size, detector, experiment)


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
        "index_tolerance_widths": INDEX_TOLERANCE,
        "resolve_widths": RESOLVE,
        "strong": [STRONG_RATIO, STRONG_COUNTS],
        "weak": [WEAK_RATIO, WEAK_COUNTS],
        "high_background": [HIGH_BG_COUNTS, HIGH_BG_SHARE],
    }


def prevalence_table(tags: np.ndarray) -> str:
    """Per attribute: how many images carry it and what fraction that is."""
    lines = [f"{'attribute':20s} {'images':>7s} {'share':>6s}"]
    for name, count in zip(ATTRIBUTES, tags.sum(axis=0), strict=True):
        lines.append(f"{name:20s} {int(count):7d} {count / len(tags):6.1%}")
    return "\n".join(lines)
