"""The checkpoint format: both networks' weights with everything needed to use them.

A checkpoint is a `torch.save`d dict of plain types and tensors only, so it loads with
`torch.load(weights_only=True)` (a checkpoint is untrusted input):

    format            "flare-coarse-to-fine/1"
    coarse, fine      {"config": <CoarseConfig / FineConfig as a dict>, "state_dict": {...}}
    labels            {"1": "liver", ...}: output channel k is label k + 1
    output_activation "sigmoid" (see inference/networks.py)
    normalisation     {"clip_hu": [-325.0, 325.0], "zscore": True}
    trained_on        free text: what the weights were trained on ("untrained" for random ones)

    python -m inference.checkpoint check PATH          # validate and describe a checkpoint
    python -m inference.checkpoint random -o PATH      # randomly initialised (untrained) weights
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from evaluation.imageio import describe_error
from evaluation.rules import get_rules
from inference.networks import OUTPUT_ACTIVATION, CoarseConfig, CoarseUNet, EfficientSegNet, FineConfig

FORMAT = "flare-coarse-to-fine/1"
CLIP_HU = (-325.0, 325.0)
FLARE21_LABELS = {o.label: o.name for o in get_rules("flare21").organs}
UNTRAINED = "untrained: randomly initialised weights (for tests and demos; segmentations are meaningless)"


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not describe usable networks."""


@dataclass
class Models:
    """Both networks, in eval mode, with the metadata of their checkpoint."""

    coarse: CoarseUNet
    fine: EfficientSegNet
    labels: dict[int, str]
    clip_hu: tuple[float, float]
    trained_on: str


def save(path: Path, coarse: CoarseUNet, fine: EfficientSegNet, trained_on: str,
         labels: dict[int, str] = FLARE21_LABELS) -> None:
    """Write a checkpoint (atomically: a temporary file, then a rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "coarse": {"config": asdict(coarse.config), "state_dict": coarse.state_dict()},
        "fine": {"config": asdict(fine.config), "state_dict": fine.state_dict()},
        "labels": {str(k): v for k, v in labels.items()},
        "output_activation": OUTPUT_ACTIVATION,
        "normalisation": {"clip_hu": list(CLIP_HU), "zscore": True},
        "trained_on": trained_on,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    tmp.replace(path)


def _config(cls, raw: dict, where: str):
    try:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)
    except TypeError as exc:
        raise CheckpointError(f"{where}: invalid network config ({exc})") from None


def load(path: Path, device: torch.device | str = "cpu") -> Models:
    """Load and check a checkpoint; CheckpointError with a one-line reason when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint ({describe_error(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    try:
        return _models(path, payload, device)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: missing or malformed field ({type(exc).__name__}: {exc})") from None


def _models(path: Path, payload: dict, device: torch.device | str) -> Models:
    if payload.get("output_activation") != OUTPUT_ACTIVATION:
        raise CheckpointError(f"{path}: output activation {payload.get('output_activation')!r} is not supported")
    labels = {int(k): str(v) for k, v in payload["labels"].items()}
    if sorted(labels) != list(range(1, len(labels) + 1)):
        raise CheckpointError(f"{path}: labels must be 1..N, got {sorted(labels)}")
    nets = []
    for key, cls, config_cls in (("coarse", CoarseUNet, CoarseConfig), ("fine", EfficientSegNet, FineConfig)):
        config = _config(config_cls, payload[key]["config"], f"{path}: {key}")
        if config.out_channels != len(labels):
            raise CheckpointError(f"{path}: {key} network has {config.out_channels} outputs for {len(labels)} labels")
        net = cls(config)
        try:
            net.load_state_dict(payload[key]["state_dict"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: {key} weights do not match its config "
                                  f"({str(exc).splitlines()[0]})") from None
        nets.append(net.to(device).eval())
    clip = tuple(float(v) for v in payload["normalisation"]["clip_hu"])
    return Models(nets[0], nets[1], labels, clip, str(payload.get("trained_on", "")))


def random_models(coarse: CoarseConfig = CoarseConfig(), fine: FineConfig = FineConfig(),
                  seed: int = 0) -> tuple[CoarseUNet, EfficientSegNet]:
    """Randomly initialised networks (Kaiming-normal), reproducible from the seed."""
    torch.manual_seed(seed)
    return CoarseUNet(coarse), EfficientSegNet(fine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a checkpoint and print what it holds as JSON")
    check.add_argument("path", type=Path)
    rand = sub.add_parser("random", help="write randomly initialised (untrained) weights")
    rand.add_argument("-o", "--out", type=Path, required=True)
    rand.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "random":
        save(args.out, *random_models(seed=args.seed), trained_on=UNTRAINED)
        print(f"wrote untrained weights to {args.out}")
        return 0
    try:
        models = load(args.path)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"path": str(args.path), "labels": models.labels, "trained_on": models.trained_on,
                      "coarse": asdict(models.coarse.config), "fine": asdict(models.fine.config)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
