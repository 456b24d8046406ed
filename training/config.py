"""The training recipe: one dataclass per run, the paper's Table 3 as its defaults.

    coarse: whole volume resampled to 160^3; fine: the organs' box plus a random margin around
    20 mm resampled to 192^3; crop and brightness (per-organ HU shift) augmentation; cases with
    lesions sampled 3x; Dice + focal loss (alpha 0.5, gamma 2); Adam (betas 0.9, 0.99), L2 1e-5,
    LR 0.01 with step decay; dropout 0.2; Kaiming-normal init; batch 16; 200 epochs; 5 folds.

A JSON file (`--config`) overrides any field by name; command-line options override the file.
Sizes are (x, y, z) voxels, margins and volumes in mm / mm^3, HU for intensities.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from inference.checkpoint import FLARE21_LABELS, NETWORK_STAGES, NETWORKS
from inference.defaults import MAX_SEED
from inference.networks import input_size_problem
from inference.postprocessing import Postprocessing
from inference.preprocessing import Normalisation

FIXED_NETWORK_FIELDS = ("in_channels", "out_channels", "input_size", "dropout")  # set by the run, not by `network`
MAX_LR = 1000.0  # far beyond any useful step size; far larger ones overflow float32 in the optimiser (a traceback)


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line and says why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run of one stage."""

    stage: str = "coarse"
    input_size: tuple[int, int, int] = (160, 160, 160)  # network input (the paper: 160 coarse, 192 fine)
    network: dict = field(default_factory=dict)  # the stage's network widths (widths; fine: context_width)
    dropout: float = 0.2
    # schedule: an epoch is one pass over the training cases (lesion cases counted 3x)
    epochs: int = 200
    max_steps: int | None = None  # stop after this many optimiser steps (the LR schedule follows it)
    max_minutes: float | None = None  # or after the steps that fit in this time (timed over 20 steps, or a tenth of it)
    batch_size: int = 16  # cases per optimiser step, over all processes
    micro_batch: int = 2  # cases per forward pass in one process (gradients accumulate up to batch_size)
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-5  # L2, added to the gradients (Adam's weight_decay)
    lr_milestones: tuple[float, ...] = (0.66, 0.86)  # fractions of the run where the LR is multiplied...
    lr_gamma: float = 0.1  # ...by this (the authors' steps at epochs 132 and 172 of 200)
    # loss: dice_weight * soft Dice + focal_weight * focal, over per-organ sigmoid channels
    dice_weight: float = 1.0
    focal_weight: float = 1.0
    focal_alpha: float = 0.5
    focal_gamma: float = 2.0
    # augmentation and sampling
    margin_mm: tuple[float, float] = (10.0, 30.0)  # fine: random margin per side around the organs' box
    coarse_crop: tuple[float, float] = (0.8, 1.0)  # coarse: fraction of each axis kept by a random crop
    organ_hu_shift: float = 20.0  # each organ's HU shifted by up to +- this
    global_hu_shift: float = 20.0  # the whole crop shifted by up to +- this
    pathological_repeats: int = 3  # cases with lesions are drawn this many times per epoch
    # data
    folds: int = 5
    fold: int | None = 0  # held-out fold for validation; None trains on every case
    seed: int = 12345  # split, sampling, augmentation and initialisation
    val_every: int = 1  # epochs between validations
    val_cases: int | None = None  # validate on at most this many held-out cases (None: all)
    cache_scale: float = 1.25  # cached samples are this much larger than the input size
    normalisation: dict = field(default_factory=lambda: Normalisation().to_dict())
    postprocessing: dict = field(default_factory=lambda: Postprocessing().to_dict())

    def network_config(self):
        """The stage's network configuration (CoarseConfig or FineConfig: the paper's sizes unless
        `network` sets other widths); ConfigError naming a field that cannot be set or is bad."""
        config_class = NETWORKS[self.stage][1]
        allowed = [f.name for f in fields(config_class) if f.name not in FIXED_NETWORK_FIELDS]
        unknown = sorted(set(self.network) - set(allowed))
        if unknown:
            raise ConfigError(f"network: {', '.join(unknown)} cannot be set here (only {', '.join(allowed)}; "
                              "input_size and dropout are fields of their own, the channels follow the labels)")
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.network.items()}
        widths = [w for k, v in overrides.items() for w in (v if isinstance(v, tuple) else (v,))]
        if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ConfigError(f"network: {self.network}: widths must be whole numbers of at least 1")
        return config_class(**{**overrides, "input_size": self.input_size, "dropout": self.dropout})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def default_config(stage: str) -> TrainConfig:
    """The paper's recipe for a stage."""
    if stage not in NETWORK_STAGES:
        raise ConfigError(f"unknown stage {stage!r} (one of {', '.join(NETWORK_STAGES)})")
    return TrainConfig(stage=stage, input_size=NETWORKS[stage][1]().input_size)


def _as_field(value, default):
    """A JSON value in the type of the field's default (lists become tuples)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


OPTIONAL_FIELDS = {"max_steps": int, "max_minutes": float, "fold": int, "val_cases": int}  # None or this type


def _type_problem(name: str, value, default) -> str | None:
    """Why a field's value is not of the field's type (a number for a float, a list of numbers
    for a tuple), None when it is."""
    if name in OPTIONAL_FIELDS and value is None:
        return None
    kind = OPTIONAL_FIELDS.get(name, type(default))

    def number(v, whole: bool = False) -> bool:  # JSON's NaN and Infinity are no numbers of a recipe
        return isinstance(v, int if whole else (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if kind is tuple:  # of the default's length, but for the milestones
        n = None if name == "lr_milestones" else len(default)
        ok = isinstance(value, tuple) and all(number(v) for v in value) and n in (None, len(value))
        wanted = f"a list of {n or 'any number of'} numbers"
    elif kind in (int, float):
        ok, wanted = number(value, whole=kind is int), "a whole number" if kind is int else "a finite number"
    else:
        ok, wanted = isinstance(value, kind), f"a {'JSON object' if kind is dict else kind.__name__}"
    return None if ok else f"{name}: {value!r} is not {wanted}"


def with_overrides(config: TrainConfig, overrides: dict, where: str) -> TrainConfig:
    """The config with the given fields replaced; ConfigError naming the unknown field or bad value."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    values = {k: _as_field(v, getattr(config, k)) for k, v in overrides.items()}
    problems = [p for k, v in values.items() if (p := _type_problem(k, v, getattr(config, k)))]
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return check(replace(config, **values), where)


def load_config(stage: str, path: Path | None, overrides: dict) -> TrainConfig:
    """The stage's defaults, then the JSON file's fields, then the command line's."""
    config = default_config(stage)
    if path is not None:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # a byte-order mark allowed
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read a JSON config ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config must be a JSON object")
        if raw.get("stage", stage) != stage:
            raise ConfigError(f"{path}: written for stage {raw['stage']!r}, not {stage!r}")
        config = with_overrides(config, raw, str(path))
    return with_overrides(config, overrides, "command line")


def given_fields(path: Path | None, overrides: dict) -> set[str]:
    """The recipe's fields a start names itself, in its JSON file (load_config has read and
    checked it) and on its command line: what a --resume takes from this start, not the run."""
    raw = json.loads(Path(path).read_text(encoding="utf-8-sig")) if path is not None else {}
    return (set(raw) | set(overrides)) - {"stage"}


def check(config: TrainConfig, where: str) -> TrainConfig:
    """Refuse values that cannot work, with the field's name."""
    problems = []
    if problem := input_size_problem(config.input_size):
        problems.append(problem)
    if config.batch_size < 1 or config.micro_batch < 1:
        problems.append("batch_size and micro_batch must be at least 1")
    if config.epochs < 1 or (config.max_steps is not None and config.max_steps < 1):
        problems.append("epochs and max_steps must be at least 1")
    if config.val_every < 1:
        problems.append("val_every must be at least 1")
    if config.max_minutes is not None and config.max_minutes <= 0:
        problems.append("max_minutes must be positive")
    if config.fold is not None and not 0 <= config.fold < config.folds:
        problems.append(f"fold {config.fold}: must be in 0..{config.folds - 1} (or null for no validation)")
    if not 0 < config.coarse_crop[0] <= config.coarse_crop[1] <= 1:
        problems.append(f"coarse_crop {config.coarse_crop}: 0 < low <= high <= 1")
    if not 0 <= config.margin_mm[0] <= config.margin_mm[1]:
        problems.append(f"margin_mm {config.margin_mm}: 0 <= low <= high")
    if config.cache_scale < 1:
        problems.append(f"cache_scale {config.cache_scale}: at least 1")
    if config.folds < 2:
        problems.append(f"folds {config.folds}: at least 2 (fold null trains on every case)")
    if not 0 <= config.seed <= MAX_SEED or (config.val_cases is not None and config.val_cases < 0):
        problems.append(f"seed must be in 0..{MAX_SEED} and val_cases 0 or more")
    if config.pathological_repeats < 1:
        problems.append(f"pathological_repeats {config.pathological_repeats}: at least 1 (1: lesions not favoured)")
    if not all(0 <= b < 1 for b in config.betas):
        problems.append(f"betas {config.betas}: each in [0, 1)")
    if not (0 < config.lr <= MAX_LR and 0 < config.lr_gamma <= 1 and config.weight_decay >= 0 and 0 <= config.dropout < 1):
        problems.append(f"0 < lr <= {MAX_LR:g}, 0 < lr_gamma <= 1, weight_decay >= 0 and 0 <= dropout < 1")
    if list(config.lr_milestones) != sorted(config.lr_milestones) or not all(0 < m < 1 for m in config.lr_milestones):
        problems.append(f"lr_milestones {config.lr_milestones}: increasing fractions of the run, each in (0, 1)")
    if min(config.organ_hu_shift, config.global_hu_shift, config.dice_weight, config.focal_weight,
           config.focal_alpha, config.focal_gamma) < 0:
        problems.append("the HU shifts and the loss's weights, alpha and gamma must be 0 or more")
    for name, cls in (("normalisation", Normalisation), ("postprocessing", Postprocessing)):
        raw, known = getattr(config, name), {f.name for f in fields(cls)}
        if unknown := sorted(set(raw) - known):
            problems.append(f"{name}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
            continue
        try:
            parsed = cls.from_dict(raw)
        except KeyError as exc:
            problems.append(f"{name}: missing key {exc} (give the whole object: see --print-config)")
        except (TypeError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
        else:
            if name == "postprocessing" and (outside := sorted(parsed.labels() - set(FLARE21_LABELS))):
                problems.append(f"postprocessing: labels {outside} are no organ's (1-{len(FLARE21_LABELS)})")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    network_class, _ = NETWORKS[config.stage]
    try:
        network = config.network_config()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        with torch.device("meta"):  # shapes only: widths that cannot build a network are refused here
            network_class(network)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ConfigError(f"{where}: network {config.network}: {exc}") from None
    return config
