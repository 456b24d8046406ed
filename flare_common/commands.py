"""The project's console commands (pyproject.toml's [project.scripts]) and what each runs.

Each command is `python -m MODULE` under a short name, as nnU-Net and TotalSegmentator users
know them. The module is imported only when its command starts, so a command whose packages are
not installed (torch, for the submission's commands, under `pip install .`) says in one line
what to install instead of a traceback.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import NoReturn

from flare_common import cli


@dataclass(frozen=True)
class Command:
    """A console command: the module whose main() it runs and what it does (one line)."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "flare-predict": Command("inference.predict", "segment CTs: the submission (predict.sh runs the same)"),
    "flare-checkpoint": Command("inference.checkpoint", "check, combine or make checkpoints"),
    "flare-score": Command("evaluation.score", "score predictions: the organisers' DSC and NSD"),
    "flare-efficiency": Command("evaluation.efficiency", "time and sample a submission case by case"),
    "flare-run": Command("evaluation.run", "efficiency, then accuracy, of one submission; one report"),
    "flare-rank": Command("evaluation.rank", "rank teams from their evaluation folders"),
    "flare-compare": Command("evaluation.compare", "what changed between two evaluations"),
    "flare-synthetic": Command("evaluation.synthetic", "phantoms with predictions of known quality"),
    "flare-phantom": Command("training.phantom", "synthetic abdominal CTs with known labels"),
    "flare-train": Command("training.train", "train one stage with the paper's recipe"),
}


def launch(name: str, argv: list[str] | None = None) -> int:
    """Import a command's module and run its main, both under flare_common.cli.run (a missing
    package named, Ctrl-C and SIGTERM as one line each); exit code."""
    return cli.run(lambda args: importlib.import_module(COMMANDS[name].module).main(args), argv)


def predict() -> NoReturn:
    cli.exit_at_once(launch("flare-predict"))  # as `python -m inference.predict` ends


def checkpoint() -> int:
    return launch("flare-checkpoint")


def score() -> NoReturn:
    cli.exit_at_once(launch("flare-score"))


def efficiency() -> int:
    return launch("flare-efficiency")


def run() -> int:
    return launch("flare-run")


def rank() -> int:
    return launch("flare-rank")


def compare() -> int:
    return launch("flare-compare")


def synthetic() -> int:
    return launch("flare-synthetic")


def phantom() -> int:
    return launch("flare-phantom")


def train() -> int:
    return launch("flare-train")
