"""NIfTI files as both sides see them: case naming, and opening a file whose stored header is sound.

Every NIfTI file the project reads (the scorer's label maps, the submission's CTs, training data)
is opened through `nifti_image`, which checks the header as stored, before nibabel repairs it
(nibabel silently turns a pixdim of 0 into 1 mm and passes NaN geometry on): a voxel spacing in
use (pixdim where the reader takes the spacing from it or no sform is in use, and the affine's)
that is zero, negative, not finite or outside SPACING_RANGE_MM, and a quaternion, offset or sform
in use that is not finite or no rotation, make the file unusable (InputError); parts not in use
that are broken are doubts (header_doubts), which the submission reports as warnings. nibabel's
own messages and the warnings of reading are captured, to be reported with the case's name and
their source. Whether a file is gzip-compressed is read from its first bytes, not its name, and a
gzip stream is read to its end so that its CRC and length are checked (nibabel stops at the data's
last byte); bytes after the stream that are not gzip data are noted, not refused (nibabel reads
such files).

Names: a case's image is <case>_0000.nii.gz (or any .nii/.nii.gz; CHANNEL_SUFFIX), its label map
<case>.nii.gz.
"""
from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import nibabel as nib
import numpy as np
from nibabel.fileholders import FileHolder

from flare_common.errors import InputError

try:  # ISA-L's gzip and zlib (the isal package): the same formats and errors, 2x faster inflate, 5x faster deflate
    from isal import igzip as gzip
    from isal import isal_zlib as zlib
except ImportError:
    import gzip
    import zlib

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SPACING_RANGE_MM = (0.05, 50.0)  # a voxel side outside this is a broken header, not a scan
AFFINE_TOLERANCE_MM = 1e-3  # two files' affines may differ by this much and still share one grid (rounding in headers)
_HEADER_SIZES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}
GZIP_MAGIC = b"\x1f\x8b"
CHANNEL_SUFFIX = "_0000"  # a case's CT is <case>_0000.nii.gz: the suffix of its one channel (FLARE, nnU-Net)
_COMPRESSED_CHUNK = 1 << 16  # gzip data inflated per call: small pieces inflate fastest (they stay in cache)
_INFLATED_CHUNK = 1 << 22


def gzip_compress(data: bytes) -> bytes:
    """A gzip stream of the data at level 1 (fast, what label maps need; ISA-L's where installed)."""
    return gzip.compress(data, compresslevel=1)


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_files(folder: Path) -> list[Path]:
    """The .nii/.nii.gz files of a folder (not its subfolders), sorted by name; hidden files (a
    name starting with '.', such as the '._' files macOS writes beside each file on other disks)
    are not images. A broken link of such a name counts (reading it fails, naming it)."""
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() or p.is_symlink() and not p.exists()) and is_nifti(p) and not p.name.startswith("."))


def is_miscased(name: str) -> bool:
    """Whether a file name is a NIfTI one in another case (CASE.NII.GZ; hidden names aside): not
    read as an image anywhere in the project, as the organisers' scripts match the exact
    lower-case suffix; a reader names such files rather than skip them silently."""
    return not name.endswith(NIFTI_SUFFIXES) and name.lower().endswith(NIFTI_SUFFIXES) and not name.startswith(".")


def miscased_nifti(folder: Path) -> list[Path]:
    """The files of a folder with miscased NIfTI names (is_miscased), sorted."""
    return sorted(p for p in folder.iterdir() if is_miscased(p.name))


MISCASED = "not read: NIfTI names end in lower-case .nii.gz or .nii"  # what a reader says of such a file


def miscased_hint(folder: Path) -> str:
    """' (A.NII.GZ, ...: not read: ...)' where a folder holds miscased NIfTI names, else ''."""
    names = [p.name for p in miscased_nifti(folder)]
    return f" ({', '.join(names)}: {MISCASED})" if names else ""


def case_stem(path: Path | str) -> str:
    """The file name (of a path, or a name) without its NIfTI suffix."""
    path = Path(path)
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def image_name(case: str) -> str:
    """FLARE naming of a case's CT: <case> -> <case>_0000.nii.gz (output_name's inverse)."""
    return f"{case}{CHANNEL_SUFFIX}.nii.gz"


def output_name(path: Path) -> str:
    """FLARE naming of a case's label map: <case>_0000.nii.gz -> <case>.nii.gz; other NIfTI
    names keep their stem."""
    stem = case_stem(path)
    return (stem[: -len(CHANNEL_SUFFIX)] if stem.endswith(CHANNEL_SUFFIX) else stem) + ".nii.gz"


def name_clashes(files: list[Path], name: Callable[[Path], str]) -> list[str]:
    """Files of one folder that `name` (output_name, case_stem) makes one case, one line per such
    group ("a_0000.nii.gz and a.nii.gz are one case, a.nii.gz"); empty where every name is its own."""
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(name(path), []).append(path.name)
    return [f"{' and '.join(members)} are one case, {key}" for key, members in groups.items() if len(members) > 1]


def folder_cases(folder: Path, name: Callable[[Path], str]) -> tuple[list[Path], str | None]:
    """The NIfTI files of a folder (nifti_files) and why they cannot be taken as its cases, one
    line (none there, or two that `name` makes one case: name_clashes), None when they can."""
    files = nifti_files(folder)
    if not files:
        return files, "no .nii.gz or .nii files" + miscased_hint(folder)
    clashes = name_clashes(files, name)
    return files, f"{clashes[0]}: keep one" if clashes else None


def is_unscaled(proxy) -> bool:
    """Whether an image's data (its `dataobj`) is read as stored: no scale factor (slope 1) and no
    intercept (0) in the header."""
    return getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0


def volume_shape(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of an image (one with more axes of length 1 after the third, a 4D image with a
    single volume say, counts as 3D, and a 2D image as one slice); InputError otherwise."""
    shape = tuple(int(s) for s in image_shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape += (1,)
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


def qform_problem(header) -> str | None:
    """Why a NIfTI header's qform (its quaternion and offsets, whatever its code) is no rotation
    and shift, None where it is one: b^2 + c^2 + d^2 may exceed 1 by nibabel's rounding slack
    (3 float32 epsilons), no more, as nibabel reads no qform beyond it."""
    quaternion = np.asarray([header[k] for k in ("quatern_b", "quatern_c", "quatern_d")], dtype=np.float64)
    offsets = np.asarray([header[k] for k in ("qoffset_x", "qoffset_y", "qoffset_z")], dtype=np.float64)
    if not (np.isfinite(quaternion).all() and np.isfinite(offsets).all()):
        return "qform quaternion or offset not finite"
    if (norm := float(quaternion @ quaternion)) > 1 + abs(float(header.quaternion_threshold)):
        return f"qform quaternion (b, c, d) of squared length {norm:.7g}, more than 1: not a rotation"
    return None


def header_problems(header, pixdim_spacing: bool = True) -> list[str]:
    """What makes a NIfTI header's geometry unusable, as stored (before nibabel's repairs): the
    spatial pixdim values where they give the voxel spacing (pixdim_spacing: the reader takes it
    from them, as the organisers' scripts do) or the affine (no sform in use); the quaternion and
    offsets where the qform is the affine (qform_code > 0, sform_code 0); the sform rows where
    sform_code > 0. Empty when the geometry in use is sound; header_doubts names unused parts
    that are not."""
    problems = []
    ndim = int(header["dim"][0])
    sform_used = int(header["sform_code"]) > 0
    if 1 <= ndim <= 7 and (pixdim_spacing or not sform_used):
        problem = spacing_problem("voxel spacing (pixdim)", header["pixdim"][1:1 + min(ndim, 3)])
        if problem:
            problems.append(problem)
    if int(header["qform_code"]) > 0 and not sform_used and (problem := qform_problem(header)):
        problems.append(problem)
    if sform_used:
        rows = np.concatenate([header[k] for k in ("srow_x", "srow_y", "srow_z")]).astype(np.float64)
        if not np.isfinite(rows).all():
            problems.append("sform not finite")
    return problems


FORMS_APART_MM = 0.1  # an sform and a qform placing a corner voxel further apart than this disagree


def header_doubts(header, shape: tuple[int, ...]) -> list[str]:
    """What in a usable NIfTI header may place the voxels other than its maker meant, one line
    each: spatial units other than mm (the spacing is read as mm all the same, as the organisers'
    scripts read it); beside an sform in use (which nibabel and the organisers' scripts use), a
    qform in use that is no rotation or that puts the volume's corners more than FORMS_APART_MM
    away, and spatial pixdim values other than the sform's voxel sizes (the organisers' scripts
    take the spacing for NSD from pixdim); neither form in use (nibabel then places the voxels
    along -x, y, z: LAS, which may mirror left and right)."""
    if not hasattr(header, "get_xyzt_units") or not hasattr(header, "get_qform"):
        return []  # not a NIfTI header
    doubts = []
    unit = header.get_xyzt_units()[0]
    if unit in ("meter", "micron"):
        doubts.append(f"spatial units '{unit}' in the header: the spacing is read as mm, as the organisers' scripts read it")
    s_code, q_code = int(header["sform_code"]), int(header["qform_code"])
    if not s_code and not q_code:
        doubts.append("neither a qform nor an sform in the header (both codes 0): the orientation is unknown and "
                      "read as nibabel reads it, LAS (the voxel axes along -x, y, z): left and right may be mirrored")
    if not s_code:
        return doubts
    sform = header.get_sform()
    spatial = min(max(int(header["dim"][0]), 1), 3)  # a 2D image's third pixdim is no voxel size
    sizes = np.sqrt((sform[:3, :spatial] ** 2).sum(axis=0))
    pixdim = np.asarray(header["pixdim"][1:1 + spatial], dtype=np.float64)
    if not np.allclose(pixdim, sizes, rtol=1e-4, atol=AFFINE_TOLERANCE_MM):
        doubts.append(f"pixdim {' x '.join(f'{v:g}' for v in pixdim)} mm differs from the sform's voxel sizes "
                      f"{' x '.join(f'{v:.4g}' for v in sizes)} mm: the sform is used (the organisers' scripts take "
                      "the spacing for NSD from pixdim)")
    if not q_code:
        return doubts
    if problem := qform_problem(header):
        return [*doubts, f"{problem}: the sform is used"]
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    apart = float(np.linalg.norm((corners @ sform.T - corners @ header.get_qform().T)[:, :3], axis=1).max())
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


def _affine_refusal(header, problems: list[str]) -> str:
    """The line refusing a header whose affine is unusable: which form gave it, and where the sform
    gave it beside a sound qform, how to use the qform instead."""
    s_code, q_code = int(header["sform_code"]), int(header["qform_code"])
    line = f"{'sform' if s_code else 'qform' if q_code else 'pixdim'}: {'; '.join(problems)}"
    if s_code and q_code and qform_problem(header) is None and not affine_problems(header.get_qform()):
        line += " (the qform is sound: set sform_code to 0 to use it)"
    return line


class Message(str):
    """A message about a file being read (its text), with its source: the package that logged or
    warned it ("nibabel", "numpy", ...) or "gzip" for what the file's compression showed."""

    source: str

    def __new__(cls, text: str, source: str) -> Message:
        message = super().__new__(cls, text)
        message.source = source
        return message


_collecting = threading.local()  # .messages: the list the thread's nibabel_messages block fills
_NUMPY_FLOAT_ERROR = re.compile(r"(overflow|underflow|invalid value|divide by zero) encountered in ")


def _collector() -> list[Message] | None:
    """The list the current thread collects messages in, None where it collects none."""
    return getattr(_collecting, "messages", None)


class _LogRouter(logging.Filter):
    """On nibabel's logger: a record logged by a thread that collects goes to its collector (and
    nowhere else); every other record passes on as it would."""

    def filter(self, record: logging.LogRecord) -> bool:
        messages = _collector()
        if messages is None:
            return True
        messages.append(Message(record.getMessage(), record.name.split(".")[0]))
        return False


class _WarningRouter:
    """warnings.showwarning's stand-in: a warning shown in a thread that collects goes to its
    collector; every other one to the showwarning it replaced."""

    def __init__(self, shown: Callable) -> None:
        self.shown = shown

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        messages = _collector()
        if messages is None:
            self.shown(message, category, filename, lineno, file, line)
            return
        text = str(message)
        messages.append(Message(text, _warning_source(text, category)))
        _forget(text, category, filename, lineno)


def _warning_source(text: str, category: type[Warning]) -> str:
    """The package a warning comes from: its category's, else numpy for numpy's floating-point
    errors (raised inside numpy's C code, they name the Python line that called it), else the
    package of the code that issued it."""
    package = category.__module__.split(".")[0]
    if package != "builtins":
        return package
    if _NUMPY_FLOAT_ERROR.match(text):
        return "numpy"
    frame = sys._getframe(2)  # above _WarningRouter.__call__
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", __name__):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "python").split(".")[0] if frame is not None else "python"


def _forget(text: str, category: type[Warning], filename: str, lineno: int) -> None:
    """Let the next file's reading collect the same warning again: the filters' "default" and
    "module" actions show a warning once per place and "once" once in all, by entries in the
    issuing module's __warningregistry__ and in warnings.onceregistry, which are dropped here."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename, frame.f_lineno) != (filename, lineno):
        frame = frame.f_back
    registry = frame.f_globals.get("__warningregistry__") if frame is not None else None
    if isinstance(registry, dict):
        registry.pop((text, category, lineno), None)
        registry.pop((text, category, 0), None)
    warnings.onceregistry.pop((text, category), None)


def _route() -> None:
    """Install the routers of nibabel's log records and of warnings: once, and again where
    warnings.showwarning was replaced since (catch_warnings replaces it in its block). The
    warning filters are never changed: they are the process's, and not safe to change from
    another thread than the one that set them."""
    if not isinstance(warnings.showwarning, _WarningRouter):
        warnings.showwarning = _WarningRouter(warnings.showwarning)
    logger = nib.imageglobals.logger
    if not any(isinstance(f, _LogRouter) for f in logger.filters):
        logger.addFilter(_LogRouter())


_route()  # at import, in the importing (main) thread: a reader thread then finds them in place


@contextmanager
def nibabel_messages() -> Iterator[list[Message]]:
    """Collect what nibabel logs (e.g. "pixdim[1,2,3] should be non-zero; setting 0 dims to 1") and
    the Python warnings shown in this thread while the block runs, instead of letting them reach
    stderr without the file's name; yields the list of messages (filled as they come), each with
    its source. Another thread's log records and warnings in the meantime (the main thread
    segmenting while a reader thread reads) go where they would have gone. The process's warning
    filters decide which warnings are shown, as they would without the block; one shown once per
    place is collected for every file that raises it."""
    _route()
    messages: list[Message] = []
    outer = _collector()
    _collecting.messages = messages
    try:
        yield messages
    finally:
        _collecting.messages = outer


class GzipMembers(io.RawIOBase):
    """The content of a gzip file, read forward (seeking back starts again from the top), member
    after member as gzip reads a file of several, inflated by ISA-L where installed. Each member's
    CRC and length are checked as it ends. Bytes after the last member that are not gzip data
    (what a copy or an upload appended) end the content: `trailing` counts them, after the stream
    has been read to its end (gzip's padding of zero bytes is not counted)."""

    def __init__(self, path: Path):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close(), as the stream it serves is)
        self._restart()

    def _restart(self) -> None:
        self._file.seek(0)
        self._inflate, self._pending, self._position, self._ended, self.trailing = _inflater(), b"", 0, False, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._file.close()
        super().close()

    def readinto(self, buffer) -> int:
        """Fill `buffer` with the next bytes of the content (fewer only at its end); EOFError where
        the file ends inside a member."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and not self._ended:
            if not self._pending:
                self._pending = self._file.read(_COMPRESSED_CHUNK)
                if not self._pending:
                    raise EOFError("the file ends inside the gzip stream (truncated)")
            out = self._inflate.decompress(self._pending, min(len(view) - filled, _INFLATED_CHUNK))
            self._pending = self._inflate.unconsumed_tail
            view[filled:filled + len(out)] = out
            filled += len(out)
            if self._inflate.eof:
                self._after_member(self._inflate.unused_data)
        self._position += filled
        return filled

    def _after_member(self, rest: bytes) -> None:
        """A member ended with `rest` read after it: another member starts, or the content ends."""
        rest = rest.lstrip(b"\0")
        while len(rest) < len(GZIP_MAGIC) and (more := self._file.read(_COMPRESSED_CHUNK)):
            rest = (rest + more).lstrip(b"\0")
        if rest.startswith(GZIP_MAGIC):
            self._inflate, self._pending = _inflater(), rest
            return
        self._ended = True
        if rest:
            self.trailing = len(rest) + os.fstat(self._file.fileno()).st_size - self._file.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR):
            raise io.UnsupportedOperation("a gzip stream seeks from its start or its position only")
        target = offset if whence == io.SEEK_SET else self._position + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target < self._position:
            self._restart()
        skip = bytearray(min(_INFLATED_CHUNK, max(target - self._position, 0)))
        while self._position < target and self.readinto(memoryview(skip)[:target - self._position]):
            pass
        return self._position


def _inflater():
    """A decompressor of one gzip member (wbits 31: the gzip header and trailer are checked)."""
    return zlib.decompressobj(31)


def is_gzip(path: Path) -> bool:
    """Whether a file starts with gzip's magic bytes (what it holds, whatever its name says)."""
    with open(path, "rb") as f:
        return f.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _open(path: Path, messages: list[Message]) -> IO[bytes]:
    """The file's content as a seekable binary stream, inflated where the file is gzip data (known
    from its first bytes, not its name: a name that says otherwise is noted in `messages`)."""
    compressed, named = is_gzip(path), path.name.endswith(".gz")
    if compressed != named:
        messages.append(Message("gzip-compressed, though its name does not end in .gz" if compressed
                                else "not gzip-compressed, though its name ends in .gz", "gzip"))
    return io.BufferedReader(GzipMembers(path), _INFLATED_CHUNK) if compressed else open(path, "rb")


@contextmanager
def nifti_image(path: Path, pixdim_spacing: bool = True) -> Iterator[tuple[nib.spatialimages.SpatialImage, list[Message]]]:
    """Open a NIfTI-1/2 file (.nii or .nii.gz; gzip-compressed or not whatever its name says) whose
    stored header has sound geometry (header_problems; pixdim_spacing: the reader takes the voxel
    spacing from pixdim, not only from the affine); yields (image, the messages of reading it:
    nibabel's, and gzip's about the file). Read the data inside the block: the file is closed after it, a gzip
    stream having been read to its end first, so a bad CRC or length raises there, and bytes after
    the stream are noted (not refused: nibabel reads such files). InputError for a refused header;
    nibabel, gzip and zlib errors pass through for the caller to report."""
    with nibabel_messages() as messages, _open(path, messages) as stream:
        start = stream.read(4)
        size = int.from_bytes(start, "little") if len(start) == 4 else 0
        klass = _HEADER_SIZES.get(size) or _HEADER_SIZES.get(int.from_bytes(start, "big") if len(start) == 4 else 0)
        if klass is None:
            naming = [str(m) for m in messages if m.source == "gzip"]
            raise InputError("not a NIfTI-1 or NIfTI-2 file" + (f" ({naming[0]})" if naming else ""))
        stream.seek(0)
        problems = header_problems(klass.header_class.from_fileobj(stream, check=False), pixdim_spacing)
        if problems:
            raise InputError("; ".join(problems))
        stream.seek(0)
        holder = FileHolder(filename=str(path), fileobj=stream)
        image = klass.from_file_map({"image": holder, "header": holder})
        if problems := affine_problems(image.affine):
            raise InputError(_affine_refusal(image.header, problems))
        yield image, messages
        raw = getattr(stream, "raw", None)
        if isinstance(raw, GzipMembers):
            while stream.read(_INFLATED_CHUNK):  # to the end: gzip checks each member's CRC and length there
                pass
            if raw.trailing:
                messages.append(Message(f"{raw.trailing} byte(s) after the end of the gzip stream, not gzip data: "
                                        "ignored", "gzip"))
