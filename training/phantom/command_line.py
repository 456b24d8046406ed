"""The generator's command line, `python -m training.phantom` (see the package's docstring)."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from flare_common import cli
from flare_common.errors import InputError
from training.phantom.atlas import ARM_SHADOW_HU, FISSURE_WIDTH_MM, LARGE_SPLEEN_KIDNEY_DROP_MM, LARGE_SPLEEN_SIZE
from training.phantom.generator import EXCLUSIVE_FRACTIONS, MIN_MAX_SIDE, Mix, exclusive_pair
from training.phantom.preview import preview
from training.phantom.priors import (
    ATROPHIC_PANCREAS,
    FATTY_LIVER_DROP_HU,
    FATTY_PANCREAS,
    FLUID_COLON_HU,
    FULL_STOMACH_HU,
    LIVER_REGION_HU,
    LIVER_REGION_SHARE,
    ORGAN_ENHANCEMENT,
    ORGAN_ENHANCEMENT_SPREAD,
    PANCREAS_FAT_PLANE_MM,
    PHASE_PROBABILITIES,
    SHORT_PANCREAS_HEAD,
)
from training.phantom.scan import EXTRA_RANGES
from training.phantom.sets import other_cases, set_case_name, write_set

PREVIEW_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # what --preview writes, by the name's suffix
MAX_CASES = 1_000_000  # a set this large already takes days to write; its names are checked up front


def _mix_help() -> dict[str, str]:
    """The command line's help for each of Mix's fractions, keyed by field name."""
    def mm(bounds: Sequence[float]) -> str:
        return f"{bounds[0]:.0f}-{bounds[1]:.0f}"

    texts = {
        "randomise": "fraction of the cases whose image is domain-randomised",
        "chest": f"fraction of the scans reaching up into the chest, {mm(EXTRA_RANGES['chest'][0])} mm above the "
                 "liver dome",
        "slab": f"fraction of the scans that are short slabs ({mm(EXTRA_RANGES['slab'][1])} mm) through the upper "
                "abdomen",
        "fatty": f"fraction of the cases with a fatty pancreas ({mm([100 * v for v in FATTY_PANCREAS])} %% of it "
                 "lobular fat)",
        "metal": "fraction of the cases with metal implants (surgical clips or spinal screws) and their streaks",
        "atrophic": f"fraction of the cases with an atrophic pancreas ({ATROPHIC_PANCREAS[0]:.2f}-"
                    f"{ATROPHIC_PANCREAS[1]:.2f} of the full thickness)",
        "fat_plane": f"fraction of the cases with {PANCREAS_FAT_PLANE_MM[0]:.0f}-{PANCREAS_FAT_PLANE_MM[1]:.0f} mm "
                     "of fat round the pancreas's body and tail that no gut enters",
        "thin_slab": f"fraction of the scans that are thin slabs ({mm(EXTRA_RANGES['thin slab'][1])} mm) just below "
                     "the liver dome, mostly above the kidneys",
        "fluid_colon": f"fraction of the cases whose colon holds homogeneous fluid of {FLUID_COLON_HU[0]:.0f}-"
                       f"{FLUID_COLON_HU[1]:.0f} HU instead of mottled faeces",
        "liver_cut": f"fraction of the scans starting {mm([-v for v in EXTRA_RANGES['liver cut'][0][::-1]])} mm below "
                     "the liver dome, through the liver's widest part, and running "
                     f"{mm(EXTRA_RANGES['liver cut'][1])} mm down",
        "pelvis": "fraction of the cases with pelvic organs and hips below the iliac crest: gluteal muscles, "
                  "bladder, rectum, femoral heads and pubic bones",
        "fatty_liver": f"fraction of the cases whose liver fat lowers by {FATTY_LIVER_DROP_HU[0]:.0f}-"
                       f"{FATTY_LIVER_DROP_HU[1]:.0f} HU in every phase",
        "kidney_sinus": "fraction of the cases whose kidney label includes the renal sinus fat, as in sets made "
                        "before 2026-12-05",
        "non_contrast": "fraction of the cases scanned without contrast whatever phase they drew, on top of the "
                        f"{100 * PHASE_PROBABILITIES[0]:.0f} %% whose drawn phase is non-contrast already",
        "short_head": f"fraction of the cases whose pancreatic head is {SHORT_PANCREAS_HEAD[0]:.1f}-"
                      f"{SHORT_PANCREAS_HEAD[1]:.1f} of its full length, the gland ending near the midline",
        "organ_enhancement": "fraction of the cases whose liver, spleen, kidneys and pancreas enhance apart from the "
                             f"vessels: {ORGAN_ENHANCEMENT[0]:.1f}-{ORGAN_ENHANCEMENT[1]:.1f} of their usual "
                             f"enhancement, each organ x{ORGAN_ENHANCEMENT_SPREAD[0]:.2f}-"
                             f"{ORGAN_ENHANCEMENT_SPREAD[1]:.2f}",
        "liver_fissures": "fraction of the cases whose liver has fat-filled fissures left out of its label: the "
                          f"umbilical fissure, {FISSURE_WIDTH_MM[0]:.1f}-{FISSURE_WIDTH_MM[1]:.0f} mm, and often the "
                          "ligamentum venosum's and fat in the porta hepatis",
        "arms": "fraction of the cases whose arms lie beside the body, with the darker, noisier band their "
                f"rays leave across it ({ARM_SHADOW_HU[0]:.0f}-{ARM_SHADOW_HU[1]:.0f} HU)",
        "long_left_lobe": "fraction of the cases whose liver's left lobe reaches down in front of the stomach",
        "full_stomach": f"fraction of the cases whose stomach is full of food of {FULL_STOMACH_HU[0]:.0f}-"
                        f"{FULL_STOMACH_HU[1]:.0f} HU without gas bubbles, as dense as the organs beside it",
        "large_spleen": f"fraction of the cases whose spleen is large and bulky (x{LARGE_SPLEEN_SIZE[0]:.1f}-"
                        f"{LARGE_SPLEEN_SIZE[1]:.1f}), reaching back in towards the spine, the left kidney "
                        f"{LARGE_SPLEEN_KIDNEY_DROP_MM[0]:.0f}-{LARGE_SPLEEN_KIDNEY_DROP_MM[1]:.0f} mm lower",
        "liver_region": f"fraction of the cases whose liver has a region {LIVER_REGION_HU[0]:.0f}-"
                        f"{LIVER_REGION_HU[1]:.0f} HU darker ({100 * LIVER_REGION_SHARE[0]:.0f}-"
                        f"{100 * LIVER_REGION_SHARE[1]:.0f} %% of it: uneven enhancement or focal fat), its label kept",
        "lower_abdomen": f"fraction of the scans starting {mm([-v for v in EXTRA_RANGES['lower abdomen'][0][::-1]])} "
                         "mm below the liver dome, below the spleen and through the liver's lowest part or below "
                         f"it, and running {mm(EXTRA_RANGES['lower abdomen'][1])} mm down (with --pelvis, into the "
                         "pelvis and hips)",
        "kidney_parenchyma": "fraction of the cases whose kidney label is the parenchyma alone: the renal pelvis's "
                             "urine left out as well as the sinus fat, the whole hilum open",
    }
    for pair in EXCLUSIVE_FRACTIONS:
        for name, other in (pair, pair[::-1]):
            texts[name] += f"; not with {_option(other)}"
    return {f.name: texts[f.name] for f in fields(Mix)}


def _option(name: str) -> str:
    """The command-line option of a Mix field."""
    return f"--{name.replace('_', '-')}"


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m training.phantom", "Write synthetic abdominal CTs with known labels (FLARE layout).", [
        "flare-phantom --out example --cases 3 --seed 2026",
        "flare-phantom --out phantoms --cases 240 --seed 1 --max-side 192 --workers 2   # a training set",
        "flare-phantom --preview phantoms.png --seed 23"])
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder to write images/, labels/ and cases.csv into (this or --preview)")
    parser.add_argument("--cases", type=cli.at_least(1, MAX_CASES), metavar="N",
                        help="number of cases (required with --out; default 3 with --preview)")
    parser.add_argument("--seed", type=cli.at_least(0), default=0, metavar="S", help="seed of the set (default %(default)s)")
    parser.add_argument("--start", type=cli.at_least(0), default=0, metavar="I",
                        help="index of the first case (default %(default)s)")
    parser.add_argument("--max-side", type=cli.at_least(MIN_MAX_SIDE), metavar="N",
                        help="at most this many voxels per axis, the field of view kept (default: full size, 512 in-plane)")
    for name, text in _mix_help().items():
        parser.add_argument(_option(name), type=cli.finite_float, default=0.0, metavar="P", help=f"{text} (default %(default)s)")
    parser.add_argument("--prefix", default="phantom", metavar="NAME",
                        help="case name prefix: letters, digits, '_' and '-', the first a letter or digit "
                             "(default %(default)s)")
    parser.add_argument("--workers", type=cli.at_least(1), default=1, metavar="N",
                        help="processes writing cases (default %(default)s)")
    parser.add_argument("--preview", type=Path, metavar="PNG", help="render slices of the cases to PNG instead of --out")
    parser.add_argument("--real", type=Path, nargs=2, metavar=("CT", "LABELS"),
                        help="with --preview: a real CT and labels of it (FLARE21 numbering: a reference or a "
                        "prediction) shown first, beside the phantoms")
    return parser


def _mix(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Mix:
    """The Mix of the command line's fractions; a usage error where they do not make one."""
    fractions = {f.name: getattr(args, f.name) for f in fields(Mix)}
    if pair := exclusive_pair(fractions):
        parser.error(f"{_option(pair[0])} and {_option(pair[1])} exclude each other: {EXCLUSIVE_FRACTIONS[pair]}")
    try:
        return Mix(**fractions)
    except ValueError:
        outside = [f"{_option(name)} {value:g}" for name, value in fractions.items() if not 0 <= value <= 1]
        if outside:
            parser.error(f"{', '.join(outside)}: a fraction must lie in [0, 1]")
        extras = [f"--{name.replace(' ', '-')}" for name in EXTRA_RANGES]
        parser.error(f"{' plus '.join(extras)} must be at most 1 (one scan range each)")


def main(argv: list[str] | None = None) -> int:
    """The command: exit code 0 when every file is written, 2 on usage errors and a --real file
    that cannot be read; an OSError for a file that cannot be written (cli.run: one line naming
    it, exit code 1)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.out is None) == (args.preview is None):
        parser.error("give exactly one of --out and --preview")
    if args.out is not None and args.cases is None:
        parser.error("--cases is required with --out")
    if args.real is not None and args.preview is None:
        parser.error("--real goes with --preview")
    try:
        set_case_name(args.prefix, 0)  # the one check of a prefix (sets.PREFIX)
    except ValueError as exc:
        parser.error(f"--prefix: {exc}")
    mix = _mix(parser, args)
    began = time.perf_counter()
    if args.preview is not None:
        if args.preview.suffix.lower() not in PREVIEW_FORMATS:
            parser.error(f"--preview {args.preview}: name a {', '.join(PREVIEW_FORMATS)} file")
        cli.refuse_unwritable(parser, "--preview", args.preview, folder=False)
        try:
            preview(args.preview, args.seed, args.cases or 3, args.start, args.max_side, args.real, mix)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote a preview of {args.cases or 3} phantom(s) to {args.preview} "
              f"in {time.perf_counter() - began:.1f} s")
        return 0
    for folder in (args.out, args.out / "images", args.out / "labels"):
        cli.refuse_unwritable(parser, "--out", folder, folder=True)
    if others := other_cases(args.out, {set_case_name(args.prefix, i) for i in range(args.start, args.start + args.cases)}):
        parser.error(f"--out {args.out}: {others}, which this set's cases.csv and pathological.txt would not list "
                     "but training would read: choose an empty folder")
    rows = write_set(args.out, args.cases, args.seed, args.start, args.prefix, args.max_side, mix, args.workers)
    print(f"wrote {len(rows)} phantom(s) ({sum(r['randomised'] == 'true' for r in rows)} randomised) to "
          f"{args.out}/images and {args.out}/labels, listed in {args.out}/cases.csv, "
          f"in {time.perf_counter() - began:.1f} s")
    return 0
