"""Reading label maps from NIfTI for scoring, without a float64 copy of the volume: as an array
(`read_labels`) or as its runs (`read_label_runs`, evaluation.runs), which for integer labels are
found as the file is inflated, a megabyte at a time, so that the volume is never held whole.

Arrays come back in nibabel's voxel order (x, y, z); the spacing is the header's
`get_zooms()[:3]`, float32 values as the official scripts use them. Files are opened through
flare_common.nifti.nifti_image, which refuses a broken stored header (see there).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from evaluation.runs import LabelRuns, as_labels, label_runs, runs_of_lines
from flare_common.errors import InputError, describe_error
from flare_common.nifti import is_unscaled, nifti_image, spacing_problem, volume_shape

T = TypeVar("T")


@dataclass(frozen=True)
class LabelVolume:
    """A label map: integer data (x, y, z), voxel spacing in mm (x, y, z), the 4x4 affine and what
    nibabel said while reading it (its header repairs)."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    messages: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class LabelMap:
    """A label map as its runs (evaluation.runs), with its spacing, affine and messages as LabelVolume's."""

    runs: LabelRuns
    spacing: tuple[float, float, float]
    affine: np.ndarray
    messages: tuple[str, ...] = field(default=())


CHUNK_BYTES = 1 << 20  # label data streamed this much at a time: inflated where it stays in cache


def _array(img, shape: tuple[int, int, int]) -> np.ndarray:
    """The image's labels as an integer array (x, y, z)."""
    proxy = img.dataobj
    unscaled = is_unscaled(proxy) and hasattr(proxy, "get_unscaled")
    stored = proxy.get_unscaled() if unscaled else np.asanyarray(proxy)
    return as_labels(np.asarray(stored).reshape(shape))


def _streamed_runs(proxy, shape: tuple[int, int, int]) -> LabelRuns:
    """The runs of integer labels stored unscaled, read from the file CHUNK_BYTES at a time."""
    dtype, n_fast = np.dtype(proxy.dtype), shape[0]
    lines = int(np.prod(shape[1:]))
    per_chunk = max(1, CHUNK_BYTES // (n_fast * dtype.itemsize))
    buffer = np.empty(per_chunk * n_fast, dtype)
    stream = proxy.file_like
    stream.seek(proxy.offset)

    def chunks() -> Iterator[np.ndarray]:
        for first in range(0, lines, per_chunk):
            chunk = buffer[: min(per_chunk, lines - first) * n_fast]
            if stream.readinto(chunk.view(np.uint8)) < chunk.nbytes:
                raise InputError("the voxel data ends early (truncated file)")
            yield chunk

    runs = runs_of_lines(chunks(), shape, fortran=True)
    if runs.values.size and runs.values.min() < 0:
        raise InputError(f"negative label values (min {runs.values.min()})")
    return runs


def _runs(img, shape: tuple[int, int, int]) -> LabelRuns:
    """The image's labels as runs: streamed where they are integers stored unscaled in NIfTI's
    order (what label maps are), else from the whole array."""
    proxy = img.dataobj
    streamable = (np.dtype(proxy.dtype).kind in "iu" and is_unscaled(proxy)
                  and getattr(proxy, "order", "F") == "F" and hasattr(proxy, "file_like"))
    return _streamed_runs(proxy, shape) if streamable else label_runs(_array(img, shape))


def _read(path: Path, content: Callable[[object, tuple[int, int, int]], T]) -> tuple[T, tuple, np.ndarray, tuple]:
    """(content(image, 3D shape), spacing, affine, messages) of a 3D label map (a 4D file with one
    volume is accepted); InputError when it can't be scored."""
    try:
        with nifti_image(Path(path)) as (img, messages):
            found = content(img, volume_shape(img.shape))
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
            affine = img.affine
    except InputError:
        raise
    except Exception as exc:  # nibabel, gzip and zlib raise many kinds for broken files
        raise InputError(f"unreadable ({describe_error(exc)})") from None
    problem = spacing_problem("voxel spacing", spacing)  # the stored header was checked: a safeguard
    if problem:
        raise InputError(problem)
    return found, spacing, affine, tuple(messages)


def read_labels(path: Path) -> LabelVolume:
    """Read a 3D label map as an array; InputError when it can't be scored."""
    return LabelVolume(*_read(path, _array))


def read_label_runs(path: Path) -> LabelMap:
    """Read a 3D label map as its runs, never holding its whole volume where it is stored as
    integers; InputError when it can't be scored."""
    return LabelMap(*_read(path, _runs))
