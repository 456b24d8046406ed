"""Reading label maps from NIfTI for scoring, without a float64 copy of the volume.

Arrays come back in nibabel's voxel order (x, y, z); the spacing is the header's
`get_zooms()[:3]`, float32 values as the official scripts use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class InputError(Exception):
    """A file that cannot be scored; the message is one line and says why."""


@dataclass(frozen=True)
class LabelVolume:
    """A label map: integer data (x, y, z), voxel spacing in mm (x, y, z) and the 4x4 affine."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


def describe_error(exc: BaseException) -> str:
    """'<ExceptionType>: <first line of its message>' for one-line error reports."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_files(folder: Path) -> list[Path]:
    """The .nii/.nii.gz files of a folder (not its subfolders), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))


def case_stem(path: Path) -> str:
    """The file name without its NIfTI suffix."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def output_name(path: Path) -> str:
    """FLARE naming of a case's label map: <case>_0000.nii.gz -> <case>.nii.gz; other NIfTI
    names keep their stem."""
    stem = case_stem(path)
    return (stem[: -len("_0000")] if stem.endswith("_0000") else stem) + ".nii.gz"


def _as_labels(values: np.ndarray) -> np.ndarray:
    """Integer label data from stored values; InputError for non-integral or negative values."""
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise InputError("label values include NaN or infinity")
        if not (values == np.round(values)).all():
            raise InputError("label values are not whole numbers")
        values = values.astype(np.int64)
    elif values.dtype.kind == "b":
        values = values.view(np.uint8)
    elif values.dtype.kind not in "iu":
        raise InputError(f"unsupported data type {values.dtype}")
    if values.size and values.dtype.kind == "i" and values.min() < 0:
        raise InputError(f"negative label values (min {values.min()})")
    if values.size and values.max() <= np.iinfo(np.uint8).max and values.dtype != np.uint8:
        values = values.astype(np.uint8)
    return values


def volume_shape(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of an image (a 4D image with a single volume counts as 3D); InputError otherwise."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume, got shape {tuple(image_shape)}")
    return shape


def read_labels(path: Path) -> LabelVolume:
    """Read a 3D label map (a 4D file with one volume is accepted); InputError when it can't be scored."""
    try:
        img = nib.load(path)
        shape = volume_shape(img.shape)
        proxy = img.dataobj
        trivial_scaling = getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0
        stored = proxy.get_unscaled() if trivial_scaling and hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
        data = _as_labels(np.asarray(stored).reshape(shape))
        spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
        affine = img.affine
    except InputError:
        raise
    except Exception as exc:  # nibabel, gzip and zlib raise many kinds for broken files
        raise InputError(f"unreadable ({describe_error(exc)})") from None
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"invalid voxel spacing {spacing}")
    return LabelVolume(data, spacing, affine)
