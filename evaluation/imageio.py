"""Reading label maps from NIfTI for scoring, without a float64 copy of the volume.

Arrays come back in nibabel's voxel order (x, y, z); the spacing is the header's
`get_zooms()[:3]`, float32 values as the official scripts use them. Files are opened through
flare_common.nifti.nifti_image, which refuses a broken stored header (see there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flare_common.errors import InputError, describe_error
from flare_common.nifti import nifti_image, spacing_problem, volume_shape


@dataclass(frozen=True)
class LabelVolume:
    """A label map: integer data (x, y, z), voxel spacing in mm (x, y, z), the 4x4 affine and what
    nibabel said while reading it (its header repairs)."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    messages: tuple[str, ...] = field(default=())


ROUNDING_NOISE = 1e-3  # float-stored labels this close to a whole number are that number (0.99999994 is 1)
SLAB = 16  # slices (last axis) rounded at a time: no full-size float temporaries


def _rounded(values: np.ndarray) -> np.ndarray:
    """Whole numbers from float-stored labels (an array of at least one axis), each within
    ROUNDING_NOISE of one (float noise from resampling or a float32 file), as uint8 where they
    fit; InputError for NaN, infinity or values farther off. Slab by slab: the float volume is
    the only full-size array besides the result."""
    slabs = [(..., slice(k, k + SLAB)) for k in range(0, values.shape[-1], SLAB)]
    low, high = 0.0, 0.0
    for slab in slabs:
        part = values[slab]
        if not np.isfinite(part).all():
            raise InputError("label values include NaN or infinity")
        off = np.abs(part - np.rint(part))
        if off.size and off.max() > ROUNDING_NOISE:
            raise InputError(f"label values are not whole numbers (e.g. {part.flat[int(np.argmax(off))]:g})")
        if part.size:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
    out = np.empty(values.shape, np.uint8 if low >= 0 and high <= np.iinfo(np.uint8).max + 0.5 else np.int64)
    for slab in slabs:
        out[slab] = np.rint(values[slab])
    return out


def _as_labels(values: np.ndarray) -> np.ndarray:
    """Integer label data from stored values (floats within ROUNDING_NOISE of whole numbers are
    rounded); InputError for other non-integral, or negative, values."""
    if values.dtype.kind == "f":
        values = _rounded(values)
    elif values.dtype.kind == "b":
        values = values.view(np.uint8)
    elif values.dtype.kind not in "iu":
        raise InputError(f"unsupported data type {values.dtype}")
    if values.size and values.dtype.kind == "i" and values.min() < 0:
        raise InputError(f"negative label values (min {values.min()})")
    if values.size and values.max() <= np.iinfo(np.uint8).max and values.dtype != np.uint8:
        values = values.astype(np.uint8)
    return values


def read_labels(path: Path) -> LabelVolume:
    """Read a 3D label map (a 4D file with one volume is accepted); InputError when it can't be scored."""
    try:
        with nifti_image(Path(path)) as (img, messages):
            shape = volume_shape(img.shape)
            proxy = img.dataobj
            trivial_scaling = getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0
            unscaled = trivial_scaling and hasattr(proxy, "get_unscaled")
            stored = proxy.get_unscaled() if unscaled else np.asanyarray(proxy)
            data = _as_labels(np.asarray(stored).reshape(shape))
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
            affine = img.affine
    except InputError:
        raise
    except Exception as exc:  # nibabel, gzip and zlib raise many kinds for broken files
        raise InputError(f"unreadable ({describe_error(exc)})") from None
    problem = spacing_problem("voxel spacing", spacing)  # the stored header was checked: a safeguard
    if problem:
        raise InputError(problem)
    return LabelVolume(data, spacing, affine, tuple(messages))
