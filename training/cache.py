"""Preprocess the training cases once: each stage's region of each case, resampled and stored.

coarse: the whole volume; fine: the organs' box plus the largest random margin, continued past
the scan's edge by repeating the edge voxels (image and labels) where the organs reach it and the
post-processing's `edge_padding` is on, as inference does. Either is
resampled to `cache_scale` x the input size (trilinear for HU, nearest for labels) and written
as `.npy` files (int16 HU, uint8 labels, memory-mapped when read) with a JSON of its geometry.
Training then crops and resizes these small arrays instead of reading whole CTs. A cached case
is named by the case and the files it is made from (their real paths), so that runs on other data
sharing a cache never read each other's cases, and is rebuilt when its files change (size or
modification time; a change after it was prepared is an error when it is loaded); parameters that change what is
cached (the stage, the cached size, the largest margin, edge padding) name another folder, and
the old folders stay until removed by hand. Every file is written under a temporary name and
then renamed, so runs that share a cache (folds in parallel, the processes of a distributed
run) never read a half-written case. Arrays are (x, y, z) in canonical RAS+ orientation.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flare_common.errors import InputError, describe_error, first_few
from flare_common.files import atomic_output, write_atomic
from inference.imageio import FILL_HU, HU_MAX
from inference.postprocessing import NO_PADDING, Padding, Postprocessing, organ_box, organ_region
from inference.preprocessing import ANTIALIASED_STAGES, edge_padded, resize_for_stage
from training.config import TrainConfig
from training.data import Case, read_case

CACHE_FORMAT = 3
HU_RANGE = (FILL_HU, HU_MAX)  # stored as int16 within the range inference reads
Bounds = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class Sample:
    """One case's cached region: image (int16 HU) and labels (uint8) of one shape (x, y, z),
    the mm per cached voxel, and the organs' tight box in cached voxel coordinates ([lo, hi)
    per axis, fractional; None where no organ is labelled)."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    organs: Bounds | None


def cache_size(config: TrainConfig) -> tuple[int, int, int]:
    return tuple(math.ceil(s * config.cache_scale) for s in config.input_size)


def cache_folder(root: Path, config: TrainConfig) -> Path:
    """The stage's folder in the cache, named by everything that changes what is cached."""
    fine = config.stage == "fine"
    key = json.dumps([CACHE_FORMAT, config.stage, cache_size(config), config.margin_mm[1] if fine else 0,
                      fine and Postprocessing.from_dict(config.postprocessing).edge_padding,
                      config.stage in ANTIALIASED_STAGES])
    return Path(root) / f"{config.stage}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _source(case: Case) -> list[int]:
    """What identifies the case's files as they are now: their sizes and modification times (ns)."""
    return [v for p in (case.image, case.label) for v in (p.stat().st_size, p.stat().st_mtime_ns)]


def _cached(folder: Path, case: Case, suffix: str) -> Path:
    """A cached file of the case: named by the case and its files' real paths (links followed)."""
    files = hashlib.sha1(f"{case.image.resolve()}\n{case.label.resolve()}".encode()).hexdigest()[:10]
    return folder / f"{case.name}-{files}.{suffix}"


def resize_labels(labels: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of an (x, y, z) label array (voxel centres as in
    preprocessing.resize): each output voxel takes the input voxel its centre lies in (PyTorch's
    F.interpolate "nearest-exact", but exact where a centre falls on a voxel boundary), gathered
    without a float copy of the volume; an unresized array comes back as it is."""
    if labels.shape == tuple(size):
        return labels
    index = [_source_voxels(m, n) for m, n in zip(labels.shape, size)]
    return labels[index[0][:, None, None], index[1][None, :, None], index[2][None, None, :]]


def _source_voxels(m: int, n: int) -> np.ndarray:
    """For each of n output voxels along an axis of m, the input voxel its centre lies in:
    floor((i + 0.5) * m / n), in integers (a centre on a boundary takes the voxel above it)."""
    return (2 * np.arange(n) + 1) * m // (2 * n)


def region_of(labels: np.ndarray, spacing: tuple[float, float, float], config: TrainConfig
              ) -> tuple[tuple[slice, ...], Padding] | None:
    """The part of the volume a stage learns from, and the voxels (before, after) per axis by
    which it continues past the scan's edge: all of it (coarse), or the organs' box plus the
    largest margin, clipped, with the edge padding of inference (fine; None without organs)."""
    if config.stage == "coarse":
        return tuple(slice(0, n) for n in labels.shape), NO_PADDING
    return organ_region(labels, labels.shape, spacing, config.margin_mm[1],
                        Postprocessing.from_dict(config.postprocessing).edge_padding)


def build(case: Case, config: TrainConfig, labels: dict[int, str], folder: Path) -> list[str]:
    """Read, check and cache one case; returns what reading its image warned of (NaN voxels
    repaired, values that do not look like HU, nibabel's header repairs), each naming the file.
    InputError naming the file when the case is unusable."""
    ct, truth = read_case(case, labels)
    found = region_of(truth, ct.spacing, config)
    meta = {"source": _source(case), "organs": None, "spacing": None}
    if found is not None:
        region, padding = found
        size = cache_size(config)
        image = resize_for_stage(edge_padded(ct.data[region], padding), size, config.stage)
        image = np.clip(np.round(image), *HU_RANGE).astype(np.int16)
        cropped = resize_labels(edge_padded(truth[region], padding), size)
        start = [r.start - p[0] for r, p in zip(region, padding)]
        extent = [r.stop - r.start + sum(p) for r, p in zip(region, padding)]
        scale = [c / n for c, n in zip(size, extent)]
        meta["spacing"] = [sp / k for sp, k in zip(ct.spacing, scale)]
        tight = organ_box(truth, truth.shape, ct.spacing, 0.0)
        if tight is not None:
            meta["organs"] = [[(t.start - a) * k, (t.stop - a) * k] for t, a, k in zip(tight, start, scale)]
        for kind, array in (("image", image), ("labels", cropped)):
            with atomic_output(_cached(folder, case, f"{kind}.npy")) as f:
                np.save(f, array)
    write_atomic(_cached(folder, case, "json"), json.dumps(meta))  # last: the case is cached once it is there
    return [f"{case.image}: {warning}" for warning in ct.warnings]


def _is_current(case: Case, folder: Path) -> bool:
    """Whether the case's cached files are there and were made from its files as they are now
    (an unreadable record counts as not cached: it is made again)."""
    try:
        meta = json.loads(_cached(folder, case, "json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("source") == _source(case)


def _build_safely(case: Case, config: TrainConfig, labels: dict[int, str], folder: Path) -> tuple[str | None, list[str]]:
    """build() in a worker: (the problem as one line or None, the warnings)."""
    torch.set_num_threads(1)
    try:
        return None, build(case, config, labels, folder)
    except InputError as exc:
        return str(exc), []
    except Exception as exc:  # a broken file must not hide the problems of the others
        if isinstance(exc, OSError) and exc.filename and Path(exc.filename).is_relative_to(folder):
            raise  # the cache cannot be written (a full disk): the run's problem, named by the file, not this case's
        return f"{case.image}: {describe_error(exc)}", []


def prepare(cases: list[Case], config: TrainConfig, labels: dict[int, str], root: Path,
            workers: int = 1, share: tuple[int, int] = (0, 1)) -> list[str]:
    """Cache every case not yet cached (this process's share of them: (rank, world size));
    returns the problems found, one line each. What reading a case warned of is printed as a
    notice as the case is done. A worker process that dies (killed for lack of memory) is a
    problem naming the cases it left undone."""
    folder = cache_folder(root, config)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases[share[0]::share[1]] if not _is_current(c, folder)]
    if not todo:
        return []
    bar = tqdm(total=len(todo), desc=f"preprocessing ({config.stage})", unit="case", disable=None)
    problems: list[str | None] = []

    def done(problem: str | None, warnings: list[str]) -> None:
        for warning in warnings:
            tqdm.write(f"notice: {warning}", file=sys.stderr)
        problems.append(problem)
        bar.update()

    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            futures = [(c, pool.submit(_build_safely, c, config, labels, folder)) for c in todo]
            broken: list[Case] = []
            try:
                for case, future in futures:
                    try:
                        done(*future.result())
                    except BrokenProcessPool:
                        broken.append(case)
                        bar.update()
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the cases being made finish, no other starts
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            lost = [c.name for c in broken if not _is_current(c, folder)]  # some were cached before the break
            if lost:
                problems.append(f"{folder}: a preprocessing process died (killed, e.g. for lack of memory) with "
                                f"{len(lost)} case(s) not cached ({first_few(lost, 5)}): "
                                f"run again with fewer --workers (cached cases are kept)")
    else:
        threads = torch.get_num_threads()
        for case in todo:
            done(*_build_safely(case, config, labels, folder))
        torch.set_num_threads(threads)
    bar.close()
    return [p for p in problems if p]


def load(cases: list[Case], config: TrainConfig, root: Path) -> list[Sample]:
    """The cached samples of the cases (memory-mapped); cases without organs have no region
    in the fine stage and are left out (the caller reports them). InputError naming the file
    where a case's cache cannot be read (removed or damaged since it was prepared) or its files
    changed since."""
    folder = cache_folder(root, config)
    samples = []
    for case in cases:
        record = _cached(folder, case, "json")
        try:
            meta = json.loads(record.read_text())
            if meta["source"] != _source(case):
                raise InputError(f"{case.image} / {case.label}: changed since they were preprocessed: run again")
            if meta["spacing"] is None:
                continue
            image = np.load(_cached(folder, case, "image.npy"), mmap_mode="r")
            labels = np.load(_cached(folder, case, "labels.npy"), mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{record.with_suffix('')}.*: cached files unreadable ({describe_error(exc, 200)}): "
                             "remove them and run again") from None
        organs = tuple(tuple(b) for b in meta["organs"]) if meta["organs"] else None
        samples.append(Sample(case.name, image, labels, tuple(meta["spacing"]), organs))
    return samples


