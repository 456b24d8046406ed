"""Train one stage of the coarse-to-fine pipeline with the paper's recipe (training/config.py).

    flare-train --stage coarse --data DATA --out runs/coarse [--config FILE.json]   (or python -m training.train)
    flare-train --stage fine --data DATA --out runs/fine [--input-size 96] [--max-steps 2000]
    torchrun --nproc_per_node 8 -m training.train --stage coarse --data DATA --out runs/coarse
    flare-checkpoint combine --coarse runs/coarse/best.pt --fine runs/fine/best.pt -o weights/flare21_c2f.pt

DATA is a FLARE21 (TrainingImg/, TrainingMask/), FLARE22 (images/, labels/) or nnU-Net
(imagesTr/, labelsTr/) folder with FLARE21 labels (1 liver, 2 kidney, 3 spleen, 4 pancreas).
Every case is checked and preprocessed once into a cache (--cache, default OUT/../cache), then
the stage trains on random crops. OUT receives: best.pt and last.pt (stage checkpoints in the
inference format), resume.pt (to continue with --resume), log.csv (one row per epoch), curve.png,
config.json (the full recipe used) and split.json. Exit code 0: trained; 2: usage or data error
(found before training, or a file that changed while it ran: then the last finished epoch's
checkpoints are kept, to continue with --resume); 1: training failed; 130: interrupted, 143:
terminated by SIGTERM (either way: continue with --resume).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import math
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from evaluation.report import csv_text
from flare_common import cli
from flare_common.errors import InputError, describe_error, first_few
from flare_common.files import write_atomic
from inference.checkpoint import (
    FLARE21_LABELS,
    NETWORK_STAGES,
    NETWORKS,
    CheckpointError,
    Models,
    load,
    non_finite,
    save,
    save_atomic,
)
from inference.defaults import DEVICES, PRECISIONS
from inference.networks import SIDE_MULTIPLE
from inference.postprocessing import Postprocessing
from inference.preprocessing import Normalisation
from inference.torch_runtime import choose_device
from training import cache
from training.augment import example
from training.config import ConfigError, TrainConfig, check, default_config, given_fields, load_config
from training.data import (
    PATHOLOGICAL_LIST,
    Case,
    DataError,
    check_headers,
    dataset_json_problems,
    file_sizes,
    find_cases,
    read_case_list,
    split,
)
from training.distributed import (
    World,
    any_process,
    barrier,
    from_main,
    gathered,
    gathered_objects,
    mean_over_processes,
    start,
    stop,
)
from training.loss import dice_focal_loss
from training.precision import choose_training_precision, precision_problem
from training.validation import score

MAX_SKIPPED_STEPS = 20  # consecutive steps with a non-finite loss or gradient before a run stops
BUDGET_PLANNING_STEPS = 20  # steps timed before a time budget (max_minutes) fixes the run's length,
BUDGET_PLANNING_SHARE = 0.1  # or fewer, once they have taken this share of the budget left (slow steps)
SCHEDULE_FIELDS = ("epochs", "max_steps", "max_minutes")  # the recipe's fields that set the run's length
RESUME_MAY_CHANGE = {*SCHEDULE_FIELDS, "val_every", "val_cases"}  # the fields a --resume may change
RUN_FILES = ("resume.pt", "best.pt", "last.pt", "log.csv")  # what a run leaves in OUT


class TrainingDiverged(Exception):
    """The loss or its gradients stopped being finite; the message is one line and says what to try."""


class Examples(Dataset):
    """An epoch's training examples: sample k of `order` (case indices, lesion cases repeated),
    cropped and augmented with a generator seeded by (seed, epoch, k)."""

    def __init__(self, samples: list[cache.Sample], order: list[int], config: TrainConfig, normalisation: Normalisation):
        self.samples, self.order, self.config, self.normalisation = samples, order, config, normalisation
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.config.seed, self.epoch, k])
        return example(self.samples[self.order[k]], self.config, self.normalisation, len(FLARE21_LABELS), rng)


def _worker_init(_: int) -> None:
    """In a data-loading process: one thread; a SIGTERM or SIGHUP sent to the whole process group
    (a scheduler's stop, a closed terminal) ends it quietly, leaving the training process to stop
    and say so (a loader process killed by the signal makes the DataLoader raise its own error
    over the training's, with a traceback)."""
    torch.set_num_threads(1)
    for signum in cli.termination_signals():
        signal.signal(signum, lambda *_: os._exit(0))


def lr_factor(step: int, total: int, milestones: tuple[float, ...], gamma: float) -> float:
    """Step decay: gamma to the number of milestones (fractions of the total steps) passed."""
    return gamma ** sum(step >= int(m * total) for m in milestones)


def plan(n_examples: int, config: TrainConfig, world: World) -> tuple[int, int, int, int]:
    """(micro-batch per forward, micro-batches per step, steps per epoch, total steps)."""
    per_process = math.ceil(config.batch_size / world.size)
    micro = min(config.micro_batch, per_process)
    accumulation = math.ceil(per_process / micro)
    steps_per_epoch = max(1, math.ceil(n_examples / (micro * accumulation * world.size)))
    total = config.epochs * steps_per_epoch
    return micro, accumulation, steps_per_epoch, min(total, config.max_steps or total)


def initial_weights(path: Path, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The stage's network weights (float32) from a checkpoint of that stage or both, to start a run
    from (at any input size: the networks are fully convolutional); DataError when it has none that fit."""
    try:
        net = load(path, stages=(config.stage,)).network(config.stage)
    except (OSError, CheckpointError) as exc:
        raise DataError([f"--init {exc}"]) from None  # the message names the file
    with torch.device("meta"):  # shapes only
        expected = {k: v.shape for k, v in NETWORKS[config.stage][0](config.network_config()).state_dict().items()}
    found = {k: v.shape for k, v in net.state_dict().items()}
    if found != expected:
        raise DataError([f"{path}: its {config.stage} network has other widths than this run's"])
    return {k: v.float() for k, v in net.state_dict().items()}


def unused_parameters(net: torch.nn.Module, input_size: tuple[int, int, int]) -> list[str]:
    """The parameters a forward and backward pass at this input size (x, y, z voxels) leaves without
    a gradient, found on a copy on the meta device (shapes only: no memory, no arithmetic). The
    fine network's context block skips a pyramid level that pools to a single voxel (inputs under
    128 a side); DistributedDataParallel must be told, or it waits for that gradient forever."""
    probe = copy.deepcopy(net).to("meta").train()
    probe(torch.zeros(2, 1, *input_size, device="meta")).sum().backward()
    return [name for name, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def gradients_finite(net: torch.nn.Module) -> bool:
    """Whether every gradient of the network is finite (no NaN or inf)."""
    return all(bool(torch.isfinite(p.grad).all()) for p in net.parameters() if p.grad is not None)


def stage_models(net: torch.nn.Module, config: TrainConfig, trained_on: str, record: dict) -> Models:
    """Stage models in the inference format (the network itself, not a copy)."""
    models = Models(None, None, dict(FLARE21_LABELS), {config.stage: Normalisation.from_dict(config.normalisation)},
                    Postprocessing.from_dict(config.postprocessing), trained_on, {config.stage: record})
    setattr(models, config.stage, net)
    return models


def plot_curve(history: list[dict], path: Path) -> None:
    """Training loss and validation DSC per organ against the epoch, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot([row["epoch"] for row in history], [row["train_loss"] for row in history], color="black")
    left.set(xlabel="epoch", ylabel="training loss (Dice + focal)", yscale="log")
    for key in dict.fromkeys(k for row in history for k in row if k.startswith("dsc_")):
        points = [(row["epoch"], row[key]) for row in history if not math.isnan(row.get(key, math.nan))]
        right.plot(*zip(*points), marker=".", label=key[4:], linewidth=2 if key == "dsc_mean" else 1)
    right.set(xlabel="epoch", ylabel="validation DSC", ylim=(0, 1))
    if right.lines:
        right.legend(loc="lower right", fontsize=8)
    for axes in (left, right):
        axes.grid(alpha=0.3)
    fig.savefig(path, dpi=90)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m training.train", __doc__.split("\n")[0], [
        "flare-train --stage coarse --data phantoms --out runs/coarse --input-size 64 --max-steps 200",
        "flare-train --stage fine --data FLARE21 --out runs/fine          # the paper's recipe",
        "torchrun --nproc_per_node 4 -m training.train --stage fine --data FLARE21 --out runs/fine   # 4 GPUs",
        "flare-checkpoint combine --coarse runs/coarse/best.pt --fine runs/fine/best.pt -o weights/mine.pt --half"])
    parser.description += "\n\n" + "\n".join(__doc__.split("\n")[6:]).strip()
    coarse, fine = default_config("coarse"), default_config("fine")
    parser.add_argument("--stage", choices=NETWORK_STAGES, required=True,
                        help="which network to train (required)")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="training data folder: FLARE21, FLARE22 or nnU-Net layout (required, but with --print-config)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for checkpoints, log and curve (required, but with --print-config)")
    parser.add_argument("--config", type=Path, help="JSON file overriding fields of the recipe (see --print-config)")
    parser.add_argument("--print-config", action="store_true", help="print the stage's full recipe as JSON and exit")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="N",
                        help=f"network input size: N or X Y Z, each a multiple of {SIDE_MULTIPLE} (default: the recipe's, "
                             f"{coarse.input_size[0]} coarse, {fine.input_size[0]} fine)")
    parser.add_argument("--epochs", type=int, help=f"epochs (default: the recipe's, {fine.epochs})")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (default: none, the epochs decide)")
    parser.add_argument("--max-minutes", type=cli.finite_float,
                        help="stop after the steps that fit in this time (the LR schedule follows; default: no limit)")
    parser.add_argument("--batch-size", type=int,
                        help=f"cases per optimiser step over all processes (default: the recipe's, {fine.batch_size})")
    parser.add_argument("--micro-batch", type=int,
                        help=f"cases per forward pass (gradients accumulate; default {fine.micro_batch})")
    parser.add_argument("--lr", type=cli.finite_float, help=f"learning rate (default: the recipe's, {fine.lr:g})")
    parser.add_argument("--fold", help="held-out fold 0..folds-1, or 'all' to train on every case (no validation; default 0)")
    parser.add_argument("--seed", type=int, help="seed of the split, sampling and initialisation (default: the recipe's)")
    parser.add_argument("--val-cases", type=int, help="validate on at most this many held-out cases (default: all of them)")
    parser.add_argument("--val-every", type=int, metavar="N",
                        help=f"validate every N epochs and at the end (default: the recipe's, {fine.val_every})")
    parser.add_argument("--pathological", type=Path,
                        help=f"text file of cases with lesions, sampled more often "
                             f"(default: DATA/{PATHOLOGICAL_LIST} if present)")
    parser.add_argument("--cache", type=Path, help="preprocessing cache folder (default: OUT/../cache)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: the GPU when there is one (default %(default)s)")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="auto: fp16 mixed precision on CUDA; on the CPU bf16 or fp32, whichever a measured step "
                             "is faster in (default %(default)s)")
    parser.add_argument("--workers", type=int, help="data loading processes per training process (default: 0 on the "
                                                    "CPU, 4 on CUDA) and preprocessing processes (default: the CPUs "
                                                    f"this process may use, at most {cli.MAX_WORKERS})")
    parser.add_argument("--trained-on", help="what the data is, recorded in the checkpoint (default: the folder and case count)")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT from its resume.pt")
    parser.add_argument("--init", type=Path, metavar="CHECKPOINT",
                        help="start from the stage's weights in this checkpoint (e.g. to fine-tune at a larger "
                             "--input-size) instead of a random initialisation")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    """The recipe's fields given on the command line."""
    size = args.input_size
    if size is not None and len(size) not in (1, 3):
        raise ConfigError("--input-size takes one number or three")
    values = {"input_size": None if size is None else tuple(size * 3 if len(size) == 1 else size),
              "epochs": args.epochs, "max_steps": args.max_steps, "max_minutes": args.max_minutes, "batch_size": args.batch_size,
              "micro_batch": args.micro_batch, "lr": args.lr, "seed": args.seed, "val_cases": args.val_cases,
              "val_every": args.val_every}
    values = {k: v for k, v in values.items() if v is not None}
    if args.fold is not None:
        if args.fold != "all" and not args.fold.isdigit():
            raise ConfigError(f"--fold {args.fold}: a fold number or 'all'")
        values["fold"] = None if args.fold == "all" else int(args.fold)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = _overrides(args)
        config = load_config(args.stage, args.config, overrides)
        given = given_fields(args.config, overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.print_config:
        print(config.to_json())
        return 0
    if args.data is None or args.out is None:
        parser.error("the following arguments are required: " + ", ".join(
            flag for flag, value in (("--data", args.data), ("--out", args.out)) if value is None))
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers {args.workers}: 0 or more")
    # before any folder is made for the run: a mistyped --data or --out leaves nothing behind
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    if args.resume and not (args.out / "resume.pt").is_file():
        parser.error(f"--resume: {args.out / 'resume.pt'}: nothing to resume")
    try:
        if problem := precision_problem(args.precision, choose_device(args.device)):
            raise ValueError(problem)
        world = start(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    if world.main:  # before any preprocessing: an output that cannot be written refuses the run at once
        cli.refuse_unwritable(parser, "--out", args.out, folder=True)
        cli.refuse_unwritable(parser, "--cache", cache_root(args), folder=True)
    try:
        with _training_into(args.out, world):
            return run(args, config, world, given)
    except (DataError, InputError) as exc:  # InputError: a cached case damaged since it was prepared
        problems = exc.problems if isinstance(exc, DataError) else [str(exc)]
        if world.main:
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            if not (args.out / "resume.pt").is_file():
                then = "nothing was trained"
            elif getattr(exc, "resumable", True):
                then = (f"the last finished epoch's checkpoints stay in {args.out} (continue with --resume once this "
                        "is put right)")
            else:
                then = f"nothing was trained; {args.out} stays as it was"
            print(f"error: {len(problems)} problem(s): {then}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        if world.main:
            kept = (f"the last good epoch's checkpoints stay in {args.out}" if (args.out / "last.pt").is_file()
                    else "no epoch had finished: no checkpoint was written")
            print(f"error: {exc}; {kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, cli.Terminated)
        then = (f"continue with --resume (from the last finished epoch in {args.out})"
                if (args.out / "resume.pt").is_file() else "no epoch had finished: nothing to resume, start again")
        if world.main:
            print(f"\n{'terminated' if terminated else 'interrupted'}: {then}", file=sys.stderr)
        return cli.Terminated.EXIT_CODE if terminated else cli.INTERRUPTED
    finally:
        stop(world)


def _check_resumed_split(args: argparse.Namespace, saved: dict, train_cases: list[Case], pathological: set[str]) -> None:
    """DataError where a resumed run (resume.pt's `saved`) trained on other cases, or sampled other
    lesion cases more often, than this start would: checked before anything is preprocessed."""
    path = args.out / "resume.pt"
    split = _run_record(saved, args.out, "split")
    if split is None:
        return
    if list(split.get("train", ())) != [c.name for c in train_cases]:
        raise DataError([f"{path}: the run trained on other cases (another --data or fold): resume with the same "
                         "data, or start a new run"])
    sizes = file_sizes(train_cases)
    if changed := [name for name, pair in split.get("bytes", sizes).items() if list(pair) != sizes.get(name)]:
        raise DataError([f"{path}: the run trained on other files of the same names ({first_few(changed, 3)}: "
                         "another --data, or files changed since): resume with the same data, or start a new run"])
    if "pathological" in split and list(split["pathological"]) != sorted(pathological):
        then, now = set(split["pathological"]), pathological
        differ = "; ".join(f"{what} {first_few(sorted(names), 3)}"
                           for what, names in (("no longer listed:", then - now), ("newly listed:", now - then)) if names)
        raise DataError([f"{path}: the run sampled other cases with lesions more often ({differ}): resume with the "
                         "same --pathological list"])


def _prepare_data(args: argparse.Namespace, config: TrainConfig, world: World,
                  saved: dict | None = None) -> tuple[list[Case], list[Case], set[str], Path]:
    """Find and check every case, split them (checked against a resumed run's `saved` split) and
    cache them; DataError lists every problem."""
    cases = find_cases(args.data)
    problems = dataset_json_problems(args.data, FLARE21_LABELS) + [p for case in cases for p in check_headers(case)]
    if problems:
        raise DataError(problems)
    pathological: set[str] = set()
    listing = args.pathological or (args.data / PATHOLOGICAL_LIST if (args.data / PATHOLOGICAL_LIST).is_file() else None)
    if listing is not None:
        pathological = read_case_list(listing, cases)
    train_cases, val_cases = split(cases, config.folds, config.fold, config.seed)
    if not train_cases:
        raise DataError([f"{args.data}: {len(cases)} case(s) leave none to train on with {config.folds} folds"])
    if config.fold is not None and not val_cases:
        raise DataError([f"{args.data}: fold {config.fold} of {config.folds} holds none of the {len(cases)} case(s): "
                         f"choose a fold below {len(cases)}, or --fold all to train on every case"])
    if saved is not None:
        _check_resumed_split(args, saved, train_cases, pathological)
    root = cache_root(args)
    workers = args.workers if args.workers is not None else cli.default_workers()
    problems = cache.prepare(cases, config, FLARE21_LABELS, root, workers if world.size == 1 else 1, (world.rank, world.size))
    problems = gathered(problems, world)  # each process preprocesses its share: the main one reports all
    if problems:
        raise DataError(problems)
    barrier(world)
    if world.size > 1:  # a cache each machine keeps for itself lacks the other machines' shares: made here
        problems = gathered(cache.prepare(train_cases, config, FLARE21_LABELS, root, 1), world)
        if problems:
            raise DataError(problems)
    return train_cases, val_cases[: config.val_cases], pathological, root


def cache_root(args: argparse.Namespace) -> Path:
    """The preprocessing cache: --cache, or a folder beside OUT (shared by the runs of one place)."""
    return args.cache or args.out.parent / "cache"


@contextlib.contextmanager
def _training_into(out: Path, world: World) -> Iterator[None]:
    """Hold OUT for this run (an exclusive lock on OUT/.lock, in the main process): a second run
    started into it meanwhile is refused (DataError) instead of replacing this one's files."""
    if not world.main:
        yield
        return
    with open(out / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError([f"{out}: another run is training into it: wait for it to end, or train into another "
                             "--out"]) from None
        for stale in out.glob(".*.tmp"):  # a file half-written by a run killed outright (kill -9, out of memory):
            stale.unlink(missing_ok=True)  # OUT is this run's alone now, so no other run is writing it
        yield


def run(args: argparse.Namespace, config: TrainConfig, world: World, given: set[str] = frozenset()) -> int:
    """Train the stage; returns the exit code. `given`: the recipe's fields this start names (its
    command line and --config), which alone may change a resumed run's recipe."""
    saved = None
    if args.resume:
        config, saved = resumed_run(args, config, given, world)
        if args.init is not None and world.main:
            print(f"notice: --init {args.init} is ignored: a resumed run goes on from its own weights", file=sys.stderr)
    elif held := [name for name in RUN_FILES if (args.out / name).is_file()]:  # a new run would replace them
        raise DataError([f"{args.out}: holds a run already ({', '.join(held)}): "
                         + ("continue it with --resume, or train into another --out" if "resume.pt" in held else
                            "without resume.pt it cannot be continued: train into another --out, or remove them")])
    start = initial_weights(args.init, config) if args.init is not None and not args.resume else None
    train_cases, val_cases, pathological, root = _prepare_data(args, config, world, saved)
    trainer = Trainer(args, config, world, train_cases, val_cases, pathological, root, start, saved)
    while trainer.state["step"] < trainer.total_steps:
        trainer.epoch()
    trainer.bar.close()
    trainer.log(f"done: {trainer.state['step']} steps; checkpoints in {args.out} (best.pt, last.pt), log.csv, curve.png")
    barrier(world)  # no process tears the group down while another still writes or talks to it
    return 0


def resumed_run(args: argparse.Namespace, config: TrainConfig, given: set[str], world: World) -> tuple[TrainConfig, dict]:
    """The run in OUT to continue: its resume.pt's contents and its own recipe, in which only the
    fields this start names (`given`) replace the run's, and only those of RESUME_MAY_CHANGE (each
    change said); the others need not be repeated. DataError, before anything is preprocessed,
    for an unreadable resume.pt or a recipe the run was not made with (main refuses a missing one)."""
    path = args.out / "resume.pt"
    try:
        # on the CPU: loading puts each tensor where its parameter is, and Adam's step counts stay on the CPU
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, ...
        raise DataError([f"{path}: unreadable ({describe_error(exc, 200)}): start a new run into another --out"],
                        resumable=False) from None
    recipe, now = _run_record(saved, args.out, "config"), asdict(config)
    if recipe is None:  # a run from before recipes were kept: this start's recipe stands
        return config, saved
    if recipe.get("stage", now["stage"]) != now["stage"]:
        raise DataError([f"{path}: a run of the {recipe['stage']} stage, not the {now['stage']} stage: resume with "
                         f"--stage {recipe['stage']}, or start a new run"])
    changed = [k for k in now if k in given and k in recipe and recipe[k] != now[k]]
    if fixed := [k for k in changed if k not in RESUME_MAY_CHANGE]:
        raise DataError([f"{path}: the run was made with {', '.join(f'{k} {recipe[k]!r}' for k in fixed)}, "
                         f"not {', '.join(repr(now[k]) for k in fixed)}: resume with the same recipe "
                         f"(only {', '.join(sorted(RESUME_MAY_CHANGE))} may change), or start a new run"])
    if world.main:
        for k in changed:
            print(f"resume: {k} {recipe[k]!r} -> {now[k]!r}", file=sys.stderr)
    merged = {k: now[k] if k in given or k not in recipe else recipe[k] for k in now}
    return check(TrainConfig(**merged), str(path)), saved


def _run_record(saved: dict, out: Path, name: str) -> dict | None:
    """A resumed run's record `name` ("config": its recipe, "split"): from its resume.pt's contents,
    else from OUT/<name>.json (a resume.pt made before it held them); None where neither has it."""
    return saved.get(name) or _recorded(out / f"{name}.json")


def _recorded(path: Path) -> dict | None:
    """A run's JSON record (config.json, split.json), lists as tuples as in the recipe; None if
    there is none (what a resume.pt made before it held them is checked against)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()} if isinstance(raw, dict) else None


class Trainer:
    """One stage's training run: the network, its optimiser and schedule, the data, the state
    that --resume restores, and what happens at the end of each epoch."""

    def __init__(self, args: argparse.Namespace, config: TrainConfig, world: World, train_cases: list[Case],
                 val_cases: list[Case], pathological: set[str], root: Path, start: dict[str, torch.Tensor] | None = None,
                 saved: dict | None = None):
        self.args, self.config, self.world, self.val_cases = args, config, world, val_cases
        self.log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if world.main else (lambda *a: None)
        try:
            samples, problems = cache.load(train_cases, config, root), []
        except InputError as exc:  # this process's cache (a machine's own) damaged: every process stops, rank 0 says why
            samples, problems = [], [str(exc) if world.main else f"process {world.rank}: {exc}"]
        if problems := gathered(problems, world):
            raise DataError(problems)
        if len(samples) < len(train_cases):
            names = sorted({c.name for c in train_cases} - {s.name for s in samples})
            self.log(f"notice: {len(names)} case(s) have no organ and give the fine stage nothing to learn: "
                     f"{first_few(names, 10)}")
        order = [i for i, s in enumerate(samples) for _ in range(config.pathological_repeats if s.name in pathological else 1)]
        if not any(s.organs for s in samples):  # the coarse stage keeps such cases: all of them would be background
            raise DataError([f"{args.data}: no training case has an organ labelled: the {config.stage} stage has "
                             "nothing to learn"])
        self.split = {"train": [c.name for c in train_cases], "validation": [c.name for c in val_cases],
                      "pathological": sorted(pathological), "bytes": file_sizes(train_cases)}
        torch.manual_seed(config.seed)  # the same initial weights in every process
        self.net = NETWORKS[config.stage][0](config.network_config()).to(world.device)
        if start is not None:  # --init: these weights instead of the random initialisation
            self.net.load_state_dict(start)
        torch.manual_seed(config.seed + world.rank)  # dropout: each process draws its own masks
        requested, recorded = args.precision, (saved or {}).get("precision", "auto")
        if requested == "auto" and not precision_problem(recorded, world.device):
            requested = recorded  # a resumed run keeps its precision unless --precision is given
        self.precision, measured = choose_training_precision(requested, self.net, config, world.device)
        if requested == "auto" and world.device.type == "cpu":  # every process runs what the main one measured
            self.precision = "bf16" if from_main(float(self.precision == "bf16"), world) else "fp32"
        lesions = (f"{len(pathological & {c.name for c in train_cases})} lesion case(s) x{config.pathological_repeats}"
                   if pathological else f"no lesion case listed ({PATHOLOGICAL_LIST} or --pathological): none sampled more often")
        self.log(f"{config.stage} stage: {len(train_cases)} training case(s) ({len(order)} examples per epoch, "
                 f"{lesions}), {len(val_cases)} for validation; input "
                 f"{'x'.join(map(str, config.input_size))}; {world.size} process(es) on {world.device.type}; "
                 f"precision {self.precision}{measured}")
        self.model = (DistributedDataParallel(self.net, device_ids=[world.device] if world.device.type == "cuda" else None,
                                              find_unused_parameters=bool(unused_parameters(self.net, config.input_size)))
                      if world.size > 1 else self.net)
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=config.lr, betas=config.betas,
                                          weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        micro, self.accumulation, self.steps_per_epoch, self.total_steps = plan(len(order), config, world)
        if micro * self.accumulation * world.size != config.batch_size:
            self.log(f"notice: batch size {config.batch_size} over {world.size} process(es) in micro-batches of {micro}: "
                     f"{micro * self.accumulation * world.size} cases per optimiser step")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, lambda step: lr_factor(step, self.total_steps, config.lr_milestones, config.lr_gamma))
        self.examples = Examples(samples, order, config, Normalisation.from_dict(config.normalisation))
        self.sampler = DistributedSampler(self.examples, num_replicas=world.size, rank=world.rank, shuffle=True,
                                          seed=config.seed)
        workers = args.workers if args.workers is not None else (4 if world.device.type == "cuda" else 0)
        self.loader = DataLoader(self.examples, batch_size=micro, sampler=self.sampler, num_workers=workers,
                                 worker_init_fn=_worker_init, pin_memory=world.device.type == "cuda")
        # what --resume restores besides the weights and the optimiser: train_seconds, the time the run
        # has trained so far (a time budget covers the whole run); budget_planned, whether that budget
        # has fixed the run's length yet
        self.state = {"step": 0, "epoch": 0, "best": -math.inf, "history": [], "train_seconds": 0.0,
                      "budget_planned": False,
                      "initialised_from": "/".join(args.init.parts[-2:]) if args.init else None,  # its run's folder and name
                      "trained_on": args.trained_on}
        if saved is not None:
            self.restore(saved)
        if world.main:  # after the restore: a refused resume leaves the run's records as they were
            args.out.mkdir(parents=True, exist_ok=True)
            write_atomic(args.out / "config.json", config.to_json() + "\n")
            write_atomic(args.out / "split.json", json.dumps(self.split, indent=1) + "\n")
        self.state["trained_on"] = args.trained_on or self.state["trained_on"]  # a resumed run keeps its own
        self.trained_on = self.state["trained_on"] or f"{len(train_cases)} training case(s) of {args.data.resolve().name}"
        self.bar = tqdm(total=self.total_steps, initial=self.state["step"], desc=f"training ({config.stage})",
                        unit="step", disable=None if world.main else True)
        self.first_step, self.started, self.seconds_before = self.state["step"], time.perf_counter(), self.state["train_seconds"]
        self.skipped = 0  # consecutive steps skipped for a non-finite loss or gradient
        self.last_lr = config.lr  # the LR the last optimiser step ran at

    def restore(self, saved: dict) -> None:
        """Continue the run in OUT from its resume.pt's contents (resumed_run and _prepare_data
        checked the recipe and the cases): weights, optimiser, schedule, random state, history and
        the run's length. DataError naming the file where the run has trained more steps than this
        start asks for."""
        path = self.args.out / "resume.pt"
        recipe, now = _run_record(saved, self.args.out, "config"), asdict(self.config)
        try:
            self.net.load_state_dict(saved["net"])
            self.optimiser.load_state_dict(saved["optimiser"])
            self.scheduler.load_state_dict(saved["scheduler"])
            if saved["scaler"]:  # empty from a run without fp16: this run's scaler starts afresh
                self.scaler.load_state_dict(saved["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise DataError([f"{path}: does not fit this run's network ({describe_error(exc, 200)})"]) from None
        per_process = saved.get("rng_per_process") or []
        if len(per_process) == self.world.size:
            cpu_rng, cuda_rng = per_process[self.world.rank]
        else:  # saved by another number of processes: the main one's state, the others seeded afresh
            cpu_rng, cuda_rng = saved["rng"], saved.get("cuda_rng")
        torch.set_rng_state(cpu_rng.cpu())
        if self.world.device.type == "cuda" and cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng.cpu(), self.world.device)
        if len(per_process) != self.world.size and self.world.rank > 0:
            torch.manual_seed(self.config.seed + self.world.rank + 1000 * saved.get("step", 0))
        self.state = {k: saved.get(k, default) for k, default in self.state.items()}
        if recipe is not None and "total_steps" in saved and all(recipe.get(k) == now[k] for k in SCHEDULE_FIELDS):
            self.total_steps = saved["total_steps"]  # as the run planned it (a time budget may have cut it)
        else:
            self.state["budget_planned"] = False  # a changed schedule: the run's length is planned again
        if self.state["step"] > self.total_steps:
            raise DataError([f"{path}: the run has trained {self.state['step']} steps already, more than the "
                             f"{self.total_steps} this start asks for: nothing to train"])
        self.sync_lr()
        self.log(f"resuming after epoch {self.state['epoch']} (step {self.state['step']} of {self.total_steps})")

    def sync_lr(self) -> None:
        """The optimiser's LR for the coming step, from the step decay over the run's current length
        (which a resume or a time budget may have changed since the scheduler last set it)."""
        config = self.config
        factor = lr_factor(self.state["step"], self.total_steps, config.lr_milestones, config.lr_gamma)
        for group, base in zip(self.optimiser.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * factor

    def random_state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's random state (CPU, CUDA or None), which resume.pt keeps for every process."""
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.world.device) if self.world.device.type == "cuda" else None

    def save_resume(self, random_states: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """resume.pt: everything --resume needs, with every process's random state (in rank order)."""
        self.state["train_seconds"] = self.seconds_before + time.perf_counter() - self.started
        save_atomic({"net": self.net.state_dict(), "optimiser": self.optimiser.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                     "rng": random_states[0][0], "cuda_rng": random_states[0][1], "rng_per_process": random_states,
                     "config": asdict(self.config), "split": self.split, "total_steps": self.total_steps,
                     "precision": self.precision, **self.state}, self.args.out / "resume.pt")

    def fit_time_budget(self, at_epoch_end: bool = False) -> None:
        """With max_minutes (the whole run's training time, resumed runs included): once
        BUDGET_PLANNING_STEPS steps are timed, or fewer that took BUDGET_PLANNING_SHARE of the
        budget, cut the run to the steps that fit; at each epoch's end cut it again by what the
        steps cost with the epochs' ends (validation, checkpoints) so far. The step decay follows
        the new length; the run is never lengthened."""
        done = self.state["step"] - self.first_step
        if self.config.max_minutes is None or done < 1:
            return
        elapsed = time.perf_counter() - self.started
        budget = self.config.max_minutes * 60 - self.seconds_before
        timed_enough = done >= BUDGET_PLANNING_STEPS or elapsed >= BUDGET_PLANNING_SHARE * budget
        if not at_epoch_end and not self.state["budget_planned"]:  # every process decides as the main one
            timed_enough = bool(from_main(float(timed_enough), self.world))
        if not (self.state["budget_planned"] if at_epoch_end else not self.state["budget_planned"] and timed_enough):
            return
        remaining = budget - elapsed
        fitting = self.state["step"] + max(0, int(remaining / (elapsed / done)))
        least = self.state["step"] + (0 if at_epoch_end else 1)
        total = int(from_main(float(min(self.total_steps, max(fitting, least))), self.world))
        self.state["budget_planned"] = True
        if total != self.total_steps:
            self.total_steps = self.bar.total = total
            self.sync_lr()
            self.log(f"\ntime budget {self.config.max_minutes:g} min: {elapsed / done:.2f} s per step, "
                     f"{self.total_steps} steps in all")

    def optimiser_step(self, losses: list[float]) -> None:
        """Apply the accumulated gradients, unless a loss or a gradient of this step was not finite
        in any process: then the step is skipped in all of them (its update would poison the
        weights), and a run whose last MAX_SKIPPED_STEPS steps were all skipped stops with an error.
        In fp16 the gradient scaler checks the gradients itself (an overflow there lowers its scale)."""
        finite = all(math.isfinite(x) for x in losses)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimiser)
            self.scaler.update()
            finite = not any_process(not finite, self.world)
        else:
            finite = not any_process(not (finite and gradients_finite(self.net)), self.world)
            if finite:
                self.optimiser.step()
        self.optimiser.zero_grad(set_to_none=True)
        self.skipped = 0 if finite else self.skipped + 1
        if self.skipped >= MAX_SKIPPED_STEPS:
            raise TrainingDiverged(f"the loss or its gradients were not finite in {self.skipped} steps in a row (at step "
                                   f"{self.state['step']}): try a lower --lr or --precision fp32")
        self.last_lr = self.optimiser.param_groups[0]["lr"]
        with warnings.catch_warnings():  # a skipped step still counts in the schedule
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"), UserWarning)
            self.scheduler.step()
        self.state["step"] += 1

    def epoch(self) -> None:
        """One pass over the examples (or what is left of the run), then the end of the epoch."""
        epoch, started = self.state["epoch"], time.perf_counter()
        self.sampler.set_epoch(epoch)
        self.examples.epoch = epoch
        self.model.train()
        autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        losses, pending = [], []
        batches = len(self.loader)
        for k, (images, labels) in enumerate(self.loader):
            images = images.to(self.world.device, non_blocking=True)
            labels = labels.to(self.world.device, non_blocking=True)
            if not pending:  # a step is `accumulation` micro-batches, or what is left at the end of the epoch
                step_size = min(self.accumulation, batches - k)
            last = len(pending) + 1 == step_size
            with self.model.no_sync() if self.world.size > 1 and not last else contextlib.nullcontext():
                with torch.autocast(self.world.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                    logits = self.model(images)
                loss = dice_focal_loss(logits, labels, self.config.dice_weight, self.config.focal_weight,
                                       self.config.focal_alpha, self.config.focal_gamma)
                self.scaler.scale(loss / step_size).backward()
            pending.append(float(loss.detach()))
            if not last:
                continue
            self.optimiser_step(pending)
            losses += [x for x in pending if math.isfinite(x)]
            pending = []
            self.bar.update()
            self.bar.set_postfix(loss=f"{np.mean(losses[-self.accumulation:]) if losses else math.nan:.3f}",
                                 lr=f"{self.last_lr:.2g}")  # the step just taken, as log.csv has it
            self.fit_time_budget()
            if self.state["step"] >= self.total_steps:
                break
        self.fit_time_budget(at_epoch_end=True)
        row = {"epoch": epoch + 1, "step": self.state["step"], "lr": self.last_lr,
               "train_loss": mean_over_processes(float(np.mean(losses)) if losses else math.nan, self.world),
               "seconds": time.perf_counter() - started}
        self.state["epoch"] = epoch + 1
        if self.world.main:
            self.validate(row)
        with cli.interrupts_deferred():  # the epoch's files are written together: a stop waits for resume.pt
            if self.world.main:
                self.end_of_epoch(row)
            random_states = gathered_objects(self.random_state(), self.world)
            if self.world.main:
                self.save_resume(random_states)
            barrier(self.world)

    def validate(self, row: dict) -> None:
        """Check the weights and validate (every val_every epochs and at the end) into the epoch's row."""
        config = self.config
        if problem := non_finite(self.net.state_dict()):  # finite gradients can still step into inf (a huge --lr)
            raise TrainingDiverged(f"the weights stopped being finite by step {self.state['step']} ({problem}): try a "
                                   "lower --lr")
        finished = self.state["step"] >= self.total_steps
        if self.val_cases and (finished or row["epoch"] % config.val_every == 0):
            inference_precision = "fp16" if self.world.device.type == "cuda" else self.precision
            row.update(score(stage_models(self.net, config, self.trained_on, {}), config.stage, self.val_cases,
                             self.world.device, inference_precision))
            self.log(f"\nepoch {row['epoch']}: loss {row['train_loss']:.4f}, validation DSC "
                     + ", ".join(f"{k[4:]} {v:.3f}" for k, v in row.items() if k.startswith("dsc_")))

    def end_of_epoch(self, row: dict) -> None:
        """Log the epoch and write the checkpoints, the log and the curve."""
        config, out = self.config, self.args.out
        self.state["history"].append(row)
        record = {"data": self.args.data.resolve().name, "trained_on": self.trained_on, "steps": self.state["step"],
                  "initialised_from": self.state["initialised_from"],
                  "epochs": row["epoch"], "precision": self.precision, "device": self.world.device.type,
                  "processes": self.world.size, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "config": asdict(config), "validation": {k: v for k, v in row.items() if k.startswith(("dsc_", "nsd_"))}}
        models = stage_models(self.net, config, self.trained_on, record)
        save(out / "last.pt", models)
        current = row.get("dsc_mean", -math.inf) if self.val_cases else row["epoch"]  # no validation: the latest
        if current > self.state["best"] or not (out / "best.pt").is_file():
            self.state["best"] = current
            save(out / "best.pt", models)
        columns = list(dict.fromkeys(k for r in self.state["history"] for k in r))
        write_atomic(out / "log.csv", csv_text(self.state["history"], columns))
        plot_curve(self.state["history"], out / "curve.png")


if __name__ == "__main__":
    sys.exit(cli.run(main))
