"""A label map as runs: the stretches of one non-zero value along the fastest axis in memory.

Scoring needs, of each label map, the labels it holds, each organ's bounding box and each organ's
mask inside a box. All three come from its runs, which cost in proportion to the labelled voxels;
and runs can be found a few lines at a time, as a file is inflated, so that a label map on disk is
scored without ever holding its whole volume (`evaluation.imageio.read_label_runs`).

Label values are read by one rule, for files and arrays alike (`as_labels`): whole numbers, float
noise within ROUNDING_NOISE rounded, nothing negative.

Axes are (x, y, z) as nibabel returns them; flat indices count voxels in memory order: x fastest
for Fortran order (NIfTI's own), z fastest for C order.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from flare_common.errors import InputError

Box = tuple[slice, slice, slice]

ROUNDING_NOISE = 1e-3  # float-stored labels this close to a whole number are that number (0.99999994 is 1)
LABEL_CEILING = 2**62  # larger label values (no year's organs, so ignored) are read as this: they fit int64
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
    out = np.empty_like(values, np.uint8 if low >= 0 and high <= np.iinfo(np.uint8).max + 0.5 else np.int64)
    for slab in slabs:
        out[slab] = np.minimum(np.rint(values[slab]), LABEL_CEILING)
    return out


def as_labels(values: np.ndarray) -> np.ndarray:
    """Integer label data (uint8 where the values fit) from a label map's values: bool, integers,
    or floats within ROUNDING_NOISE of whole numbers (rounded); InputError for other non-integral,
    or negative, values. The file reader's rule, and score_case's for arrays."""
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


def _labelled_words(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(the whole 8-byte words of a contiguous 1D array, the indices of those not zero, elements
    per word): the voxels after the last whole word are left to the caller."""
    per_word = 8 // flat.itemsize
    words = flat[: flat.size // per_word * per_word].view(np.uint64)
    return words, np.flatnonzero(words != 0), per_word  # through a bool array: 2x faster than of the words


def flat_nonzero(flat: np.ndarray) -> np.ndarray:
    """Indices of the non-zero elements of a contiguous 1D integer or bool array, ascending.

    Same result as np.flatnonzero, several times faster on sparse data: it first finds the
    non-zero 8-byte words and only then looks at the elements inside them.
    """
    words, k, per_word = _labelled_words(flat)
    n_words = words.size
    candidates = (k[:, None] * per_word + np.arange(per_word)).ravel()
    tail = np.flatnonzero(flat[n_words * per_word :]) + n_words * per_word
    return np.concatenate([candidates[flat[candidates] != 0], tail])


@dataclass(frozen=True)
class LabelRuns:
    """The labelled voxels of a 3D label map as runs (no run continues onto the next line).
    starts and ends are flat indices in memory order (inclusive, int64), values the label of each
    run (int64), ascending by start."""

    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray
    shape: tuple[int, int, int]
    fortran: bool  # memory order: x fastest (nibabel's usual) or z fastest

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> LabelRuns:
        """The runs of a label map of this shape with nothing labelled."""
        none = np.zeros(0, np.int64)
        return cls(none, none, none, tuple(shape), True)

    def _axes(self) -> tuple[int, int, int]:
        """The axes from fastest to slowest in memory."""
        return (0, 1, 2) if self.fortran else (2, 1, 0)

    def present(self) -> tuple[int, ...]:
        """The label values other than 0, ascending."""
        values = np.sort(self.values)  # not np.unique: its first call imports numpy.ma (20-40 ms)
        return tuple(int(v) for v in values[np.r_[True, values[1:] != values[:-1]]]) if values.size else ()

    def _places(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, ...]:
        """Of runs starting and ending at these flat indices: their first and last index along the
        fast axis, and their line's index along the middle and the slow axis."""
        n_fast, n_mid = self.shape[self._axes()[0]], self.shape[self._axes()[1]]
        lines = starts // n_fast
        return starts - lines * n_fast, ends - lines * n_fast, lines % n_mid, lines // n_mid

    def boxes(self, max_label: int) -> list[Box | None]:
        """Bounding box of each label 1..max_label (None where absent)."""
        boxes: list[Box | None] = [None] * max_label
        keep = self.values <= max_label
        by_label = np.argsort(self.values[keep], kind="stable")  # each label's runs stay in memory order
        starts, ends, values = self.starts[keep][by_label], self.ends[keep][by_label], self.values[keep][by_label]
        if values.size == 0:
            return boxes
        first = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        last = np.r_[first[1:], values.size] - 1
        fast_first, fast_last, mid, slow = self._places(starts, ends)
        fast_axis, mid_axis, slow_axis = self._axes()
        ranges = {
            fast_axis: (np.minimum.reduceat(fast_first, first), np.maximum.reduceat(fast_last, first)),
            mid_axis: (np.minimum.reduceat(mid, first), np.maximum.reduceat(mid, first)),
            slow_axis: (slow[first], slow[last]),
        }
        for n, label in enumerate(values[first]):
            boxes[int(label) - 1] = tuple(slice(int(ranges[a][0][n]), int(ranges[a][1][n]) + 1) for a in range(3))
        return boxes

    def mask(self, label: int, box: Box) -> np.ndarray:
        """labels[box] == label, as a bool array of the box's shape in the map's memory order."""
        axes = self._axes()
        lo, hi = [box[a].start for a in axes], [box[a].stop for a in axes]
        size = [h - low for low, h in zip(lo, hi)]
        chosen = self.values == label
        fast_first, fast_last, mid, slow = self._places(self.starts[chosen], self.ends[chosen])
        first, last = np.maximum(fast_first, lo[0]), np.minimum(fast_last, hi[0] - 1)
        inside = (first <= last) & (mid >= lo[1]) & (mid < hi[1]) & (slow >= lo[2]) & (slow < hi[2])
        line_start = ((mid[inside] - lo[1]) + size[1] * (slow[inside] - lo[2])) * size[0] - lo[0]
        toggles = np.zeros(int(np.prod(size)) + 1, bool)  # where a run starts, and just after one ends
        toggles[first[inside] + line_start] ^= True  # runs never overlap: each index at most once
        toggles[last[inside] + line_start + 1] ^= True  # a run starting where another ends toggles twice
        inside_run = np.logical_xor.accumulate(toggles[:-1])
        shape = tuple(box[a].stop - box[a].start for a in range(3))
        return inside_run.reshape(shape, order="F" if self.fortran else "C")


def _mixed(words: np.ndarray, itemsize: int) -> np.ndarray:
    """Which 8-byte words hold elements (of itemsize bytes) of more than one value."""
    bits = 8 * itemsize
    first = words & np.uint64((1 << bits) - 1)  # an element of each word (the first, little-endian)
    return words != first * np.uint64(sum(1 << (bits * i) for i in range(8 // itemsize)))


def _line_runs(flat: np.ndarray, n_fast: int, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, values) of the runs in `flat`, whole lines of n_fast voxels in memory order
    whose first voxel has the flat index `offset`.

    A run starts or ends only in a non-zero 8-byte word that is mixed, differs from a
    neighbouring word, or holds a line's first or last voxel: only those words' voxels are looked
    at, so that the cost follows the runs more than the labelled voxels.
    """
    words, k, per_word = _labelled_words(flat)
    n_words = words.size
    w, first = words[k], k * per_word  # each labelled word and its first voxel
    edge = _mixed(w, flat.itemsize)
    edge |= w != words[np.maximum(k - 1, 0)]
    edge |= w != words[np.minimum(k + 1, n_words - 1)]
    edge |= k == n_words - 1  # the last word: the voxels after it (less than a word) may differ
    edge |= (first - 1) // n_fast != (first + per_word - 1) // n_fast  # holds a line's first voxel
    edge |= first // n_fast != (first + per_word) // n_fast  # holds a line's last voxel
    where = np.concatenate([(k[edge, None] * per_word + np.arange(per_word)).ravel(),
                            np.arange(n_words * per_word, flat.size)])  # and the voxels after the last word
    values = flat[where]
    column = where % n_fast
    labelled = values != 0
    starts = labelled & ((column == 0) | (flat[np.maximum(where - 1, 0)] != values))
    ends = labelled & ((column == n_fast - 1) | (flat[np.minimum(where + 1, flat.size - 1)] != values))
    values = values[starts]
    if values.dtype == np.uint64:  # values past int64's range would wrap to negative ones
        values = np.minimum(values, np.uint64(LABEL_CEILING))
    return where[starts] + offset, where[ends] + offset, values.astype(np.int64)


def runs_of_lines(chunks: Iterable[np.ndarray], shape: tuple[int, int, int], fortran: bool = True) -> LabelRuns:
    """The runs of a label map of this shape given as consecutive 1D chunks of its data in memory
    order, each made of whole lines (a chunk may be reused for the next once it has been given)."""
    n_fast = shape[0 if fortran else 2]
    parts, offset = [], 0
    for chunk in chunks:
        parts.append(_line_runs(chunk, n_fast, offset))
        offset += chunk.size
    if offset != int(np.prod(shape)):
        raise ValueError(f"{offset} voxels given for a label map of shape {shape}")
    if not parts:
        return LabelRuns.empty(shape)
    starts, ends, values = (np.concatenate(p) for p in zip(*parts))
    return LabelRuns(starts, ends, values, tuple(shape), fortran)


def label_runs(labels: np.ndarray) -> LabelRuns:
    """The runs of a 3D label map. Reads the volume once in memory order (no copy for C- or
    Fortran-ordered data) to find the labelled voxels; the rest costs in proportion to those."""
    if not (labels.flags.c_contiguous or labels.flags.f_contiguous):
        labels = np.ascontiguousarray(labels)
    fortran = labels.flags.f_contiguous  # NIfTI's order where both are (an axis of length 1)
    return runs_of_lines([labels.ravel(order="F" if fortran else "C")], labels.shape, fortran)  # memory order, no copy
