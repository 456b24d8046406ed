"""Command-line values the benchmarks share: CT shapes and the networks' input sizes (counts:
flare_common.cli.at_least), each checked once here so that a wrong value is one line of usage
error, never a traceback."""
from __future__ import annotations

import argparse
from pathlib import Path

from inference.defaults import DEFAULT_WEIGHTS

MIN_CT_SIDE = 16
BACKEND_HELP = ("what runs the networks; auto: OpenVINO on the CPU where installed (in fp32 or bf16, as --precision "
                "decides), else torch (default)")


def add_weights(parser: argparse.ArgumentParser) -> None:
    """--weights: the checkpoint a benchmark runs (default: the shipped one)."""
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="checkpoint (default: the shipped one)")


def parse_shape(text: str) -> tuple[int, int, int]:
    """'512x512x160' -> (512, 512, 160): an argparse type."""
    try:
        shape = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < MIN_CT_SIDE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected XxYxZ voxels, each at least {MIN_CT_SIDE}, e.g. 512x512x160")
    return shape


def shape_text(shape: tuple[int, ...]) -> str:
    """(512, 512, 160) -> '512x512x160': parse_shape's inverse."""
    return "x".join(map(str, shape))


def parse_sizes(values: list[str]) -> dict[str, tuple[int, int, int]] | None:
    """--sizes: two sides (coarse fine), multiples of SIDE_MULTIPLE, as cubes per stage; None for
    ['checkpoint'] (the checkpoint's own sizes). ValueError with the problem otherwise."""
    from inference.networks import SIDE_MULTIPLE  # imports torch: only where sizes are asked for

    if values == ["checkpoint"]:
        return None
    if len(values) == 2 and all(s.isdigit() and int(s) > 0 and int(s) % SIDE_MULTIPLE == 0 for s in values):
        return {"coarse": (int(values[0]),) * 3, "fine": (int(values[1]),) * 3}
    raise ValueError(f"--sizes {' '.join(values)}: expected two sides (coarse fine), multiples of "
                     f"{SIDE_MULTIPLE}, or 'checkpoint'")


def missing_files(paths: list[Path] | None) -> list[Path]:
    """The paths that are not files (for --real and the like, checked before any work)."""
    return [p for p in paths or [] if not p.is_file()]


def checked_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace, default_real: Path
                   ) -> tuple[dict[str, tuple[int, int, int]] | None, list[Path]]:
    """The --sizes of a whole-submission benchmark (parse_sizes) and its real CTs (--real, else
    `default_real` where it exists), after refusing (parser.error) bad sizes and a --weights or
    --real file that is not there."""
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    for flag, missing in (("--weights", missing_files([args.weights])), ("--real", missing_files(args.real))):
        if missing:
            parser.error(f"{flag} {missing[0]}: no such file")
    return sizes, args.real if args.real is not None else [default_real] if default_real.is_file() else []
