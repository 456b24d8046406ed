"""NIfTI files as both sides see them: case naming, and opening a file whose stored header is sound.

Every NIfTI file the project reads (the scorer's label maps, the submission's CTs, training data)
is opened through `nifti_image`, which checks the header as stored, before nibabel repairs it
(nibabel silently turns a pixdim of 0 into 1 mm and passes NaN geometry on): a voxel spacing that
is zero, negative, not finite or outside SPACING_RANGE_MM, and non-finite quaternion, offset or
sform values in use, make the file unusable (InputError). nibabel's own messages are captured, to
be reported with the case's name, and a gzip stream is read to its end so that its CRC and length
are checked (nibabel stops at the data's last byte).

Names: a case's image is <case>_0000.nii.gz (or any .nii/.nii.gz), its label map <case>.nii.gz.
"""
from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.fileholders import FileHolder

from flare_common.errors import InputError

try:  # ISA-L's gzip (the isal package): the same format and errors, 2x faster inflate, 5x faster deflate
    from isal import igzip as gzip
except ImportError:
    import gzip

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SPACING_RANGE_MM = (0.05, 50.0)  # a voxel side outside this is a broken header, not a scan
_HEADER_SIZES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}
_DRAIN_CHUNK = 1 << 20


def gzip_compress(data: bytes, level: int = 1) -> bytes:
    """A gzip stream of the data (ISA-L's where installed; level 1: fast, what label maps need)."""
    return gzip.compress(data, compresslevel=level)


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_files(folder: Path) -> list[Path]:
    """The .nii/.nii.gz files of a folder (not its subfolders), sorted by name; hidden files (a
    name starting with '.', such as the '._' files macOS writes beside each file on other disks)
    are not images."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))


def case_stem(path: Path | str) -> str:
    """The file name (of a path, or a name) without its NIfTI suffix."""
    path = Path(path)
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def output_name(path: Path) -> str:
    """FLARE naming of a case's label map: <case>_0000.nii.gz -> <case>.nii.gz; other NIfTI
    names keep their stem."""
    stem = case_stem(path)
    return (stem[: -len("_0000")] if stem.endswith("_0000") else stem) + ".nii.gz"


def volume_shape(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of an image (one with more axes of length 1 after the third, a 4D image with a
    single volume say, counts as 3D); InputError otherwise."""
    shape = tuple(int(s) for s in image_shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume, got shape {tuple(image_shape)}")
    return shape


def spacing_problem(what: str, values) -> str | None:
    """None when every voxel side is finite and within SPACING_RANGE_MM, else one line saying which is not."""
    low, high = SPACING_RANGE_MM
    bad = [float(v) for v in values if not (np.isfinite(v) and low <= v <= high)]
    if bad:
        shown = " x ".join(f"{float(v):g}" for v in values)
        return f"{what} {shown} mm is not within {low:g}-{high:g} mm"
    return None


def header_problems(header) -> list[str]:
    """What makes a NIfTI header's geometry unusable, as stored (before nibabel's repairs): the
    spatial pixdim values, and the quaternion, offsets and sform rows where their codes say they
    are in use. Empty when the geometry is sound."""
    problems = []
    ndim = int(header["dim"][0])
    if 1 <= ndim <= 7:
        problem = spacing_problem("voxel spacing (pixdim)", header["pixdim"][1:1 + min(ndim, 3)])
        if problem:
            problems.append(problem)
    if int(header["qform_code"]) > 0:
        quaternion = [header[k] for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")]
        if not np.isfinite(np.asarray(quaternion, dtype=np.float64)).all():
            problems.append("qform quaternion or offset not finite")
    if int(header["sform_code"]) > 0:
        rows = np.concatenate([header[k] for k in ("srow_x", "srow_y", "srow_z")]).astype(np.float64)
        if not np.isfinite(rows).all():
            problems.append("sform not finite")
    return problems


FORMS_APART_MM = 0.1  # an sform and a qform placing a corner voxel further apart than this disagree


def header_doubts(header, shape: tuple[int, ...]) -> list[str]:
    """What in a usable NIfTI header may place the voxels other than its maker meant, one line
    each: spatial units other than mm (the spacing is read as mm all the same, as the organisers'
    scripts read it), and an sform and a qform in use that put the volume's corners more than
    FORMS_APART_MM apart (the sform is used, as nibabel and the organisers' scripts use it)."""
    if not hasattr(header, "get_xyzt_units") or not hasattr(header, "get_qform"):
        return []  # not a NIfTI header
    doubts = []
    unit = header.get_xyzt_units()[0]
    if unit in ("meter", "micron"):
        doubts.append(f"spatial units '{unit}' in the header: the spacing is read as mm, as the organisers' scripts read it")
    (sform, s_code), (qform, q_code) = header.get_sform(coded=True), header.get_qform(coded=True)
    if s_code and q_code and sform is not None and qform is not None:
        corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
        apart = float(np.linalg.norm((corners @ sform.T - corners @ qform.T)[:, :3], axis=1).max())
        if apart > FORMS_APART_MM:
            doubts.append(f"the sform and the qform place the voxels up to {apart:.3g} mm apart: the sform is used")
    return doubts


def affine_problems(affine: np.ndarray | None) -> list[str]:
    """What makes a 4x4 voxel-to-world affine unusable: non-finite values, or voxel sizes (the
    lengths of its first three columns) outside SPACING_RANGE_MM."""
    if affine is None or not np.isfinite(affine).all():
        return ["affine not finite"]
    problem = spacing_problem("affine voxel sizes", np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
    return [problem] if problem else []


@contextmanager
def nibabel_messages() -> Iterator[list[str]]:
    """Collect what nibabel logs (e.g. "pixdim[1,2,3] should be non-zero; setting 0 dims to 1") and
    the Python warnings issued in this thread, instead of letting them reach stderr without the
    file's name; yields the list of messages (filled as they come). Another thread's log records
    and warnings in the meantime (the main thread segmenting while a reader thread reads) go where
    they would have gone."""
    logger = nib.imageglobals.logger
    messages: list[str] = []
    owner = threading.get_ident()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == owner:
                messages.append(record.getMessage())
            else:
                for handler in handlers:
                    handler.handle(record)

    collect, handlers, propagate = Collect(), list(logger.handlers), logger.propagate
    for handler in handlers:
        logger.removeHandler(handler)
    logger.addHandler(collect)
    logger.propagate = False
    try:
        with warnings.catch_warnings():  # restores the filters and showwarning when the block ends
            warnings.simplefilter("always")
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None) -> None:
                if threading.get_ident() == owner:
                    messages.append(str(message))
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            yield messages
    finally:
        logger.removeHandler(collect)
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = propagate


@contextmanager
def nifti_image(path: Path) -> Iterator[tuple[nib.spatialimages.SpatialImage, list[str]]]:
    """Open a NIfTI-1/2 file (.nii or .nii.gz) whose stored header has sound geometry; yields (image,
    nibabel's messages). Read the data inside the block: the file is closed after it, a gzip stream
    having been read to its end first, so a bad CRC or length raises there. InputError for a
    refused header; nibabel, gzip and zlib errors pass through for the caller to report."""
    opener = gzip.open if path.name.endswith(".gz") else open  # ISA-L's where installed
    with opener(path, "rb") as stream, nibabel_messages() as messages:
        start = stream.read(4)
        size = int.from_bytes(start, "little") if len(start) == 4 else 0
        klass = _HEADER_SIZES.get(size) or _HEADER_SIZES.get(int.from_bytes(start, "big") if len(start) == 4 else 0)
        if klass is None:
            raise InputError("not a NIfTI-1 or NIfTI-2 file")
        stream.seek(0)
        problems = header_problems(klass.header_class.from_fileobj(stream, check=False))
        if problems:
            raise InputError("; ".join(problems))
        stream.seek(0)
        holder = FileHolder(filename=str(path), fileobj=stream)
        image = klass.from_file_map({"image": holder, "header": holder})
        problems = affine_problems(image.affine)
        if problems:
            raise InputError("; ".join(problems))
        yield image, messages
        while stream.read(_DRAIN_CHUNK):  # to the end: gzip checks the CRC and length there
            pass
