"""Reading one detector image of any format the field uses (TIFF, EDF, CBF, HDF5/NeXus, PNG,
JPEG) as a 2-D float32 array of counts, refusing a file whose header declares an absurd size
before any pixel is decoded.

Conventions:
- an image declaring more than --max-pixels pixels (default 25,000,000, above an Eiger 16M) is
  refused from its header, before its pixels are decoded: a few KB can declare gigabytes;
- HDF5/NeXus: --h5-path names the dataset; without it the NeXus default plottable signal, else
  /entry/data/data; a file without it is a problem that lists the image-like datasets found;
- a multi-frame TIFF, EDF or HDF5 stack contributes its first frame (or the `frame` asked for:
  a dataset that references a frame in place reads that one);
- colour images (PNG, JPEG, RGB TIFF) become luminance 0.299 R + 0.587 G + 0.114 B;
- inverted (exported with dark = intense) images turn back into counts: full scale − value,
  where full scale is the integer type's maximum (255 for 8-bit) or the image maximum for floats;
- pixels flagged negative by the detector (gaps, bad pixels) and NaN/inf become 0 counts and are
  counted; complex pixels are refused, not cut to their real part.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

FORMATS = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".edf": "edf",
    ".cbf": "cbf",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".nxs": "hdf5",
    ".nx5": "hdf5",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}
NEXUS_DEFAULT = "/entry/data/data"
LUMINANCE = np.array([0.299, 0.587, 0.114])
# A Pilatus 6M frame is 2463×2527 ≈ 6.2 M pixels, an Eiger 16M 4150×4371 ≈ 18 M: real detectors
# fit; a 12 KB file declaring 20000² (400 M pixels, 3 GB as float64) does not.
MAX_PIXELS = 25_000_000
MIN_SIDE = 2

def read_image(
    path, *, inverted: bool = False, h5_path: str | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """One detector image as a 2-D float32 array of counts; PipelineError names file and problem."""
    path = Path(path)
    try:
        pixels, _ = read_counts(path, inverted=inverted, h5_path=h5_path, max_pixels=max_pixels)
    except PipelineError as err:
        raise PipelineError(f"{path}: {err}") from None
    except Exception as err:  # every library has its own errors for a corrupt file
        raise PipelineError(f"{path}: {describe_error(err)}") from None
    return pixels


def image_format(path: Path) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def read_counts(
    path: Path, *, inverted: bool, h5_path: str | None, max_pixels: int = MAX_PIXELS,
    frame: int = 0,
) -> tuple[np.ndarray, int]:
    """(float32 counts, number of flagged pixels set to 0) for one file of a known format."""
    fmt = image_format(path)
    if fmt is None:
        raise PipelineError(f"unsupported format {path.suffix or '(no extension)'!r}")
    if not path.is_file():
        raise PipelineError("file not found")
    raw, full_scale = READERS[fmt](path, h5_path, max_pixels, int(frame))
    raw = np.asarray(raw)
    _check_image(raw)
    pixels = raw.astype(np.float64)
    if inverted:
        pixels = (np.nanmax(pixels) if full_scale is None else full_scale) - pixels
    flagged = ~np.isfinite(pixels) | (pixels < 0)
    if flagged.all():
        raise PipelineError("no pixel holds a finite, non-negative value")
    pixels[flagged] = 0
    return pixels.astype(np.float32), int(flagged.sum())


def check_size(shape, max_pixels: int) -> None:
    """Refuse an image whose declared shape is over the limit; called before pixels are decoded."""
    dims = [int(n) for n in shape]
    pixels = math.prod(dims)
    if pixels > max_pixels:
        raise PipelineError(
            f"image is {'×'.join(map(str, dims))} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (raise it with --max-pixels)"
        )


def _check_image(raw: np.ndarray) -> None:
    """A real-valued 2-D image of at least MIN_SIDE² pixels, or a PipelineError saying why not."""
    if np.iscomplexobj(raw):  # casting would keep the real part and drop the rest silently
        raise PipelineError(f"pixels are complex numbers ({raw.dtype}); expected real counts")
    if raw.ndim != 2:
        raise PipelineError(f"image has shape {raw.shape}, expected a 2-D image")
    if min(raw.shape) < MIN_SIDE:
        raise PipelineError(
            f"image is {raw.shape[0]}×{raw.shape[1]} pixels, too small: "
            f"at least {MIN_SIDE}×{MIN_SIDE} are needed"
        )


def _full_scale(array: np.ndarray) -> float | None:
    """The value of a saturated pixel for integer types; None (use the maximum) for floats."""
    if array.dtype == bool:
        return 1.0
    if np.issubdtype(array.dtype, np.integer):
        return float(np.iinfo(array.dtype).max)
    return None


def _luminance(array: np.ndarray, channels_last: bool = True) -> np.ndarray:
    if not channels_last:
        array = np.moveaxis(array, 0, -1)
    return array[..., :3].astype(np.float64) @ LUMINANCE


def _read_tiff(path: Path, _h5_path, max_pixels: int, frame: int = 0):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise PipelineError("TIFF holds no image")
        if len(tif.pages) <= frame:
            raise PipelineError(f"TIFF holds no frame {frame} ({len(tif.pages)} pages)")
        page = tif.pages[frame]  # a stack contributes its first frame unless told
        depth = (page.imagedepth,) if page.imagedepth > 1 else ()
        check_size((*depth, page.imagelength, page.imagewidth), max_pixels)
        array = page.asarray()
        scale = _full_scale(array)
        if array.ndim == 3 and page.samplesperpixel in (3, 4):
            planar = array.shape[0] == page.samplesperpixel and array.shape[-1] not in (3, 4)
            array = _luminance(array, channels_last=not planar)
    return array, scale


def _read_fabio(path: Path, _h5_path, max_pixels: int, frame: int = 0):
    import fabio

    with _quiet("fabio"):
        declared = fabio.openheader(str(path)).shape  # CBF decodes on open: check the header first
        if declared:
            check_size(declared, max_pixels)
        with fabio.open(str(path)) as img:
            if getattr(img, "incomplete_file", False) or getattr(img, "incomplete_data", False):
                raise PipelineError("file is truncated (data shorter than its header says)")
            if frame >= max(1, img.nframes):
                raise PipelineError(f"file holds no frame {frame} ({img.nframes} frames)")
            # the first frame of a multi-frame file unless told
            array = np.array(img.getframe(frame).data if frame else img.data)
    return array, _full_scale(array)


def _read_hdf5(path: Path, h5_path: str | None, max_pixels: int, frame: int = 0):
    import h5py

    with h5py.File(path, "r") as f:
        key = h5_path or _nexus_signal(f) or NEXUS_DEFAULT
        if key not in f:
            found = ", ".join(_image_datasets(f)[:5]) or "none"
            hint = "" if h5_path else "; name the dataset with --h5-path"
            raise PipelineError(f"no dataset {key}{hint} (image-like datasets here: {found})")
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise PipelineError(f"{key} is a group, not a dataset")
        if ds.ndim not in (2, 3):
            raise PipelineError(f"dataset {key} has shape {ds.shape}, expected 2-D or a 3-D stack")
        check_size(ds.shape[-2:], max_pixels)
        if frame >= (ds.shape[0] if ds.ndim == 3 else 1):
            raise PipelineError(f"dataset {key} holds no frame {frame} (shape {ds.shape})")
        array = ds[frame] if ds.ndim == 3 else ds[()]  # one frame of a stack, alone
    return array, _full_scale(array)


def _nexus_signal(f) -> str | None:
    """The NeXus default plottable data (root@default → entry@default → NXdata@signal), if set."""
    try:
        entry = f[_text(f.attrs["default"])]
        data = entry[_text(entry.attrs["default"])]
        return data[_text(data.attrs["signal"])].name
    except (KeyError, TypeError, ValueError):
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _image_datasets(f) -> list[str]:
    names: list[str] = []

    def visit(name, obj):
        if getattr(obj, "ndim", 0) in (2, 3):
            names.append("/" + name)

    f.visititems(visit)
    return names


def _read_pillow(path: Path, _h5_path, max_pixels: int, frame: int = 0):
    if frame:
        raise PipelineError(f"a {path.suffix} file holds one image, not frame {frame}")
    with _pillow_opened(path, max_pixels) as img:
        img.load()  # a truncated file fails here, not later
        if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
            array = np.asarray(img)
            if img.mode == "I" and array.size and array.max() <= 65535:
                return array, 65535.0  # Pillow may open 16-bit greyscale as 32-bit "I"
            return array, _full_scale(array)
        if img.mode == "LA":
            return np.asarray(img)[..., 0], 255.0
        return _luminance(np.asarray(img.convert("RGB"))), 255.0


@contextlib.contextmanager
def _pillow_opened(path: Path, max_pixels: int):
    """The image with only its header read and its size within the limit.

    Pillow's own bomb check refuses more than twice Image.MAX_IMAGE_PIXELS on open: that global
    is our limit while opening, and its refusal becomes our message with the declared shape.
    """
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():  # above the limit is refused just below, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        Image.MAX_IMAGE_PIXELS = None  # only to read the declared size for the message
        with Image.open(path) as img:
            check_size((img.height, img.width), max_pixels)
        raise
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with img:
        check_size((img.height, img.width), max_pixels)
        yield img


READERS = {
    "tiff": _read_tiff,
    "edf": _read_fabio,
    "cbf": _read_fabio,
    "hdf5": _read_hdf5,
    "png": _read_pillow,
    "jpeg": _read_pillow,
}


@contextlib.contextmanager
def _quiet(logger_name: str):
    """fabio logs warnings about damaged files; we report those ourselves, once."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def describe_error(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"cannot read the image ({type(err).__name__}{': ' + text if text else ''})"
