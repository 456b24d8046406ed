"""Reading CT volumes into the canonical orientation, and writing label maps on the input's grid.

The canonical orientation is nibabel's closest RAS+ (see inference/axes.py): the voxel axes are
permuted and flipped to the closest world axes using the full affine, so permuted, flipped and
slightly oblique scans all come out with the axial plane in (x, y). The data are never
resampled: a label map mapped back with `from_canonical` lies exactly on the input's grid.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from flare_common.errors import InputError, describe_error
from flare_common.files import atomic_output
from flare_common.nifti import affine_problems, gzip_compress, header_doubts, is_unscaled, nifti_image, volume_shape

MAX_VOXELS = 1_200_000_000  # refuse larger volumes before reading them (4.8 GB as float32)
MAX_SIDE = 8192
FILL_HU = -1024.0  # value given to NaN and -inf voxels (air); +inf becomes HU_MAX
HU_MAX = 3071.0
AIR_BELOW_HU = -500.0  # a CT in HU has voxels below this (air around the body, bowel gas, lung)
MIN_SLICES = 3  # fewer voxels than this along an axis: an image, not a volume (the networks see volumes)
_RAS = axcodes2ornt(("R", "A", "S"))


@dataclass
class CT:
    """A CT in canonical orientation.

    data: float32 HU, axes (x, y, z) RAS+, in the file's own memory order (NIfTI's: the stored
    first axis fastest, so Fortran order for a scan stored near RAS+ or LPS+: reorienting and
    writing labels back then move no voxel across the memory); spacing: mm along those axes; image: the file as read
    (its geometry is the output's: labels_image); orientation: the nibabel orientation that
    maps the stored axes to canonical ones; warnings: what was repaired on the way in and what looks
    wrong (values that are not HU); reorient_s: the seconds spent turning the stored voxels into
    canonical float32 (a benchmark's stage).
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    image: nib.spatialimages.SpatialImage
    orientation: np.ndarray
    warnings: list[str] = field(default_factory=list)
    reorient_s: float = 0.0

    def from_canonical(self, labels: np.ndarray) -> np.ndarray:
        """A canonical-orientation array mapped back onto the input's voxel grid (and shape), in
        Fortran order, the order NIfTI stores (written without another copy)."""
        back = apply_orientation(labels, ornt_transform(_RAS, self.orientation))
        return np.asfortranarray(back).reshape(self.image.shape, order="F")


def read_ct(path: Path) -> CT:
    """Read a CT file (3D, or 4D with one volume) into canonical orientation; InputError if unusable.

    The stored header's geometry is checked before nibabel repairs it, and a gzip stream's CRC and
    length are checked (flare_common.nifti.nifti_image); what reading it said is kept in the CT's
    warnings, each after its source ("nibabel: ...", "numpy: ...", "gzip: ..."). The file is closed
    on return: `CT.image` serves its header, affine and shape, the voxels are in `CT.data`."""
    try:
        with nifti_image(Path(path), pixdim_spacing=False) as (image, messages):  # the spacing is the affine's
            ct = to_canonical(image)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"unreadable ({describe_error(exc)})") from None
    ct.warnings[:0] = [f"{m.source}: {m}" for m in messages]
    return ct


def to_canonical(image: nib.spatialimages.SpatialImage) -> CT:
    """A CT image (3D, or 4D with one volume) in canonical orientation; InputError if unusable."""
    dtype = image.get_data_dtype()
    if dtype.names or dtype.kind == "c":
        raise InputError(f"{'RGB' if dtype.names else 'complex'} voxels ({dtype}): not CT values")
    shape = volume_shape(image.shape)
    if min(shape) < 1:
        raise InputError(f"an empty volume: shape {shape}")
    if max(shape) > MAX_SIDE or np.prod(shape, dtype=np.float64) > MAX_VOXELS:
        raise InputError(f"refusing a volume of shape {shape} (at most {MAX_SIDE} per side, {MAX_VOXELS:.1e} voxels)")
    affine = image.affine
    if affine is None or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("invalid affine (not finite or singular)")
    problems = affine_problems(affine)  # voxel sizes of 0 or 1e30 mm are a broken header, not a scan
    if problems:
        raise InputError("; ".join(problems))
    orientation = io_orientation(affine)
    voxel_sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(orientation):
        spacing[int(target)] = float(voxel_sizes[axis])
    try:
        stored = _stored_voxels(image).reshape(shape)
    except Exception as exc:
        raise InputError(f"unreadable data ({describe_error(exc)})") from None
    start = time.perf_counter()
    # one pass in memory order: the flips and axis swaps are views, the cast to float32 the one copy
    canonical = apply_orientation(stored, orientation).astype(np.float32, order="K")
    integer = np.issubdtype(stored.dtype, np.integer)
    del stored
    warnings = []
    if not integer:
        bad = ~np.isfinite(canonical)
        if bad.any():
            warnings.append(f"{int(bad.sum())} NaN/inf voxels set to {FILL_HU:g} HU (+inf to {HU_MAX:g})")
            np.nan_to_num(canonical, copy=False, nan=FILL_HU, posinf=HU_MAX, neginf=FILL_HU)
    seconds = time.perf_counter() - start
    if problem := unit_problem(canonical):
        warnings.append(problem)
    if problem := thin_problem(canonical.shape):
        warnings.append(problem)
    warnings += header_doubts(image.header, shape)
    return CT(canonical, tuple(spacing), image, orientation, warnings, seconds)


def unit_problem(hu: np.ndarray) -> str | None:
    """None when a CT's values look like Hounsfield units; else a one-line warning. A scan in HU
    holds air (about -1000 HU) around the body or in the bowel; with no voxel below AIR_BELOW_HU
    the values are most likely raw stored numbers whose rescale was lost on conversion (DICOM's
    intercept, usually -1024, shifts air to 0) or not CT at all, and the networks, which read HU,
    will label them wrongly. The image is segmented as it is."""
    if hu.size == 0 or (lowest := float(hu.min())) < AIR_BELOW_HU:
        return None
    return (f"no voxel below {AIR_BELOW_HU:g} HU (the lowest is {lowest:g}): not Hounsfield units? a CT has air "
            f"near -1000 HU; raw values whose rescale was lost (air near 0) give wrong labels")


def thin_problem(shape: tuple[int, int, int]) -> str | None:
    """None for a volume; a one-line warning where an axis (x, y, z of the canonical grid) has
    fewer than MIN_SLICES voxels: the networks were trained on volumes (the thinnest training
    scans are slabs of 20 mm), and an image a slice or two thick is segmented as it is."""
    thin = [f"{n} voxel(s) along {axis}" for axis, n in zip("xyz", shape) if n < MIN_SLICES]
    if not thin:
        return None
    return f"{' and '.join(thin)}: a slice, not a volume; the networks segment volumes, its labels are unreliable"


def _stored_voxels(image: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The voxels as stored where the header does not scale them (int16 HU, say: half the bytes
    of float32 to reorient), else scaled to float32."""
    proxy = image.dataobj
    if is_unscaled(proxy) and np.issubdtype(image.get_data_dtype(), np.integer):
        return np.asarray(proxy)
    return np.asarray(proxy, dtype=np.float32)


def labels_image(labels: np.ndarray, ct: CT) -> nib.spatialimages.SpatialImage:
    """uint8 labels on the input's grid as an image: the input's geometry (shape and axis order,
    affine, qform and sform with their codes, zooms, units), none of what described its values or
    the scan (label_header)."""
    # the input's own affine, which is the header's: nibabel then leaves the header's codes alone
    return type(ct.image)(labels.astype(np.uint8, copy=False).reshape(ct.image.shape), ct.image.affine,
                          header=label_header(ct.image.header))


def label_header(header):
    """A copy of a CT's NIfTI header for its label map: uint8 unscaled, display range 0 (none),
    intent NIFTI_INTENT_LABEL, no description, auxiliary file or extensions (a CT's carry its
    window, and often the patient's name or the scanner's notes)."""
    header = header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"] = header["cal_max"] = 0
    header.set_intent("label")
    header["descrip"] = header["aux_file"] = b""
    header.extensions.clear()
    return header


def write_labels(labels: np.ndarray, ct: CT, path: Path) -> None:
    """Write uint8 labels (input grid) as labels_image, gzip-compressed for a .gz name; atomically
    (flare_common.files.atomic_output: a hidden temporary file beside it, synced to the disk and
    renamed, removed if anything, Ctrl-C included, stops the write)."""
    data = labels_image(labels, ct).to_bytes()
    if path.name.endswith(".gz"):
        data = gzip_compress(data)
    with atomic_output(path, "wb", fsync=True) as f:
        f.write(data)
