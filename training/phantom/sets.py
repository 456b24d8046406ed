"""Sets of phantoms on disk: FLARE-layout pairs, cases.csv and pathological.txt, written by several
processes; and how a folder holding another set's cases is told apart.

cases.csv has a row per case: its name, seed and index, what was drawn for it (phase, variations,
lesions, metal, organs present) and its grid. `shape` (voxels) and `spacing` (mm) are given along
the canonical x, y, z (RAS) axes the phantom is built on, whatever axis order the case's files store
(`orientation`, their axis codes: the files' own order only for RAS); `scan` names its z range.
"""
from __future__ import annotations

import csv
import re
from functools import partial
from pathlib import Path

from flare_common import cli
from flare_common.errors import first_few
from flare_common.files import atomic_output
from flare_common.nifti import nifti_files
from training.data import PATHOLOGICAL_LIST, case_name
from training.phantom.generator import PLAIN, Mix, Phantom, case_seed, generate, save
from training.phantom.priors import LABELS

PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a set's case name prefix: a plain, visible file name part
LISTINGS = (PATHOLOGICAL_LIST, "cases.csv")  # the files that list a set's cases, in the order they are written


def _case_row(phantom: Phantom, case: str, seed: int, index: int) -> dict[str, str]:
    """The cases.csv row of one case (shape and spacing along canonical x, y, z: the module's docstring)."""
    present = [LABELS[k] for k in sorted(LABELS) if (phantom.labels == k).any()]
    return {"case": case, "seed": str(seed), "index": str(index), "phase": phantom.phase,
            "randomised": str(phantom.randomised).lower(), "lesions": str(phantom.lesions),
            "shape": "x".join(str(n) for n in phantom.labels.shape),
            "spacing": "x".join(f"{s:.4f}" for s in phantom.spacing),
            "orientation": "".join(phantom.orientation), "scan": phantom.scan,
            "fatty_pancreas": f"{phantom.fatty:.2f}", "pancreas_thickness": f"{phantom.pancreas_thickness:.2f}",
            "pancreas_fat_plane_mm": f"{phantom.fat_plane_mm:.1f}",
            "colon_fluid_hu": "none" if phantom.colon_hu is None else f"{phantom.colon_hu:.0f}",
            "pelvis": "true" if phantom.pelvis else "false",
            "liver_fat_drop_hu": f"{phantom.liver_drop_hu:.0f}",
            "kidney_sinus_labelled": "true" if phantom.sinus_labelled else "false",
            "kidney_pelvis_labelled": "true" if phantom.pelvis_labelled else "false",
            "pancreas_head": f"{phantom.pancreas_head:.2f}",
            "organ_enhancement": "bolus" if phantom.organ_enhancement is None else f"{phantom.organ_enhancement:.2f}",
            "liver_fissures": "true" if phantom.liver_fissures else "false",
            "arms": "true" if phantom.arms else "false",
            "long_left_lobe": "true" if phantom.long_left_lobe else "false",
            "stomach_food_hu": "none" if phantom.stomach_hu is None else f"{phantom.stomach_hu:.0f}",
            "large_spleen": "true" if phantom.large_spleen else "false",
            "liver_region_hu": f"{phantom.liver_region_hu:.0f}",
            "metal": phantom.metal or "none",
            "organs": " ".join(present)}


def set_case_name(prefix: str, index: int) -> str:
    """The name of case `index` of a set written with `prefix` (its label file's name without .nii.gz);
    ValueError for a prefix that PREFIX does not match (a path, a hidden name)."""
    if not PREFIX.fullmatch(prefix):
        raise ValueError(f"case name prefix {prefix!r}: letters, digits, '_' and '-', the first a letter or digit")
    return f"{prefix}_{index:04d}"


def _write_case(out: Path, seed: int, index: int, prefix: str, max_side: int | None, mix: Mix) -> dict[str, str]:
    """Generate and write case `index` of seed; its cases.csv row."""
    phantom = generate(case_seed(seed, index), max_side=max_side, mix=mix)
    case = set_case_name(prefix, index)
    save(phantom, out / "images", out / "labels", case)
    return _case_row(phantom, case, seed, index)


def other_cases(out: Path, names: set[str], label_folders: tuple[str, ...] = ("labels",)) -> str:
    """Where out/images or the label folders hold cases not among `names` (another set's), what a
    usage error says of them ("holds 2 case(s) of another set (a, b)"); else ""."""
    found = set()
    for folder, image in ((out / "images", True), *((out / name, False) for name in label_folders)):
        found.update(case_name(path.name, image) for path in (nifti_files(folder) if folder.is_dir() else ()))
    others = sorted(found - names)
    if not others:
        return ""
    return f"holds {len(others)} case(s) of another set ({first_few(others, 3)})"


def write_set(out: Path, cases: int, seed: int, start: int = 0, prefix: str = "phantom",
              max_side: int | None = None, mix: Mix = PLAIN, workers: int = 1) -> list[dict[str, str]]:
    """Write cases start..start+cases-1 of seed (with mix's variations) as FLARE-layout pairs under
    out/images and out/labels (`workers` processes), out/cases.csv and out/pathological.txt (the
    cases with lesions, which training samples more often); the rows of cases.csv. The two lists
    of an earlier set in out are removed first and written when every case is, cases.csv last, so
    that they never describe other files than those beside them and cases.csv is there only when
    the set is complete; every file appears whole or not at all (save). OSError naming
    the file that could not be written; ValueError for a prefix PREFIX does not match."""
    from concurrent.futures import ProcessPoolExecutor

    set_case_name(prefix, start)  # a bad prefix fails before anything is removed or written
    for name in LISTINGS:
        (out / name).unlink(missing_ok=True)
    indices = range(start, start + cases)
    write = partial(_write_case, out, seed, prefix=prefix, max_side=max_side, mix=mix)
    bar = partial(cli.progress, total=cases, desc="phantoms", unit="case")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(bar(pool.map(write, indices)))
    else:
        rows = list(bar(map(write, indices)))
    _write_listings(out, rows)
    return rows


def _write_listings(out: Path, rows: list[dict[str, str]]) -> None:
    """Write out/pathological.txt (the cases with lesions), then out/cases.csv (the rows), each whole."""
    pathological, cases_csv = (out / name for name in LISTINGS)
    with atomic_output(pathological, "w") as f:
        f.write("".join(f"{r['case']}\n" for r in rows if int(r["lesions"])))
    with atomic_output(cases_csv, "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
