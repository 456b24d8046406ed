"""The checkpoint format: the networks with everything the pipeline needs to run them.

A checkpoint is a `torch.save`d dict of plain types and tensors only, so it loads with
`torch.load(weights_only=True)` (a checkpoint is untrusted input):

    format            "flare-coarse-to-fine/2"
    coarse, fine      {"config": <CoarseConfig / FineConfig as a dict, input_size included>,
                       "state_dict": {...}, "normalisation": {"clip_hu": [-325, 325], "zscore": true},
                       "training": {...: what training recorded, free-form}}
                      a stage checkpoint (written by training) holds one of the two
    labels            {"1": "liver", ...}: output channel k is label k + 1
    output_activation "sigmoid" (see inference/networks.py)
    postprocessing    {"min_component_mm3": 1000, "components_kept": {"2": 2}, "box_margin_mm": 20,
                       "not_above": {"2": 1, "3": 1, "4": 1}, "edge_padding": true}
                      (inference.postprocessing.Postprocessing; checkpoints without not_above or
                      edge_padding get its defaults)
    trained_on        free text: what the weights were trained on ("untrained: ..." for random ones)

Weights may be stored as float16 (`--half`, half the size); they are loaded as float32.

    flare-checkpoint check PATH                        # validate and describe
    flare-checkpoint random -o PATH                    # untrained weights
    flare-checkpoint combine --coarse A --fine B [B2 ...] -o C [--half] [--trained-on TEXT]  # B2...: averaged
                             [--post-from coarse|fine]
    flare-checkpoint export-openvino PATH              # the CPU's fast path (inference.openvino_runtime)
(or python -m inference.checkpoint ...)
"""
from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
import textwrap
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from flare_common import cli
from flare_common.errors import describe_error
from flare_common.files import atomic_output
from flare_common.labels import label_names
from inference.defaults import MAX_SEED, WEIGHTS_HELP
from inference.networks import OUTPUT_ACTIVATION, CoarseConfig, CoarseUNet, EfficientSegNet, FineConfig, input_size_problem
from inference.postprocessing import Postprocessing
from inference.preprocessing import Normalisation
from inference.spec import NETWORK_STAGES, Spec

FORMAT = "flare-coarse-to-fine/2"
NETWORKS = dict(zip(NETWORK_STAGES, ((CoarseUNet, CoarseConfig), (EfficientSegNet, FineConfig))))  # network, config
FLARE21_LABELS = label_names("flare21")
UNTRAINED = "untrained: randomly initialised weights (for tests and demos; segmentations are meaningless)"


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not describe usable networks."""


@dataclass
class Models:
    """The networks (eval mode; a stage checkpoint has one of the two) with their metadata.

    normalisation and training are keyed by stage name ("coarse", "fine")."""

    coarse: CoarseUNet | None
    fine: EfficientSegNet | None
    labels: dict[int, str] = field(default_factory=lambda: dict(FLARE21_LABELS))
    normalisation: dict[str, Normalisation] = field(
        default_factory=lambda: {stage: Normalisation() for stage in NETWORK_STAGES})
    post: Postprocessing = field(default_factory=Postprocessing)
    trained_on: str = ""
    training: dict[str, dict] = field(default_factory=dict)

    def network(self, stage: str) -> torch.nn.Module | None:
        return getattr(self, stage)

    def stages(self) -> list[str]:
        """The stages this checkpoint holds."""
        return [stage for stage in NETWORK_STAGES if self.network(stage) is not None]

    def spec(self) -> Spec:
        """What the pipeline needs besides the networks (inference.spec)."""
        stages = self.stages()
        return Spec(dict(self.labels), {stage: tuple(self.network(stage).config.input_size) for stage in stages},
                    {stage: self.normalisation[stage] for stage in stages}, self.post, self.trained_on)


def save(path: Path, models: Models, half: bool = False) -> None:
    """Write a checkpoint atomically (flare_common.files.atomic_output: nothing is left where the
    write fails, and an existing checkpoint stays whole); `half` stores the weights as float16.
    OSError where it cannot be written."""
    payload = {"format": FORMAT, "labels": {str(k): v for k, v in models.labels.items()},
               "output_activation": OUTPUT_ACTIVATION, "postprocessing": models.post.to_dict(),
               "trained_on": models.trained_on}
    for stage in models.stages():
        net = models.network(stage)
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        payload[stage] = {"config": asdict(net.config), "state_dict": state,
                          "normalisation": models.normalisation[stage].to_dict(),
                          "training": models.training.get(stage, {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(payload, path)


def save_atomic(payload: dict, path: Path) -> None:
    """torch.save to `path` atomically (atomic_output); OSError naming `path` where it cannot be
    written (torch's zip writer turns a full disk's OSError into a RuntimeError: the OSError is
    raised instead, inside atomic_output, which names the file)."""
    with atomic_output(path, "wb") as f:
        try:
            torch.save(payload, f)
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise


def _config(cls, raw: dict, where: str):
    try:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)
    except TypeError as exc:
        raise CheckpointError(f"{where}: invalid network config ({exc})") from None


def non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """None when every floating-point tensor of a state dict is finite, else which are not (one
    line: how many, and the first's name): the weights of a diverged training run."""
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    return f"NaN or inf in {len(bad)} tensor(s), the first {bad[0]}" if bad else None


def load(path: Path, device: torch.device | str = "cpu", stages: tuple[str, ...] = NETWORK_STAGES) -> Models:
    """Load and check a checkpoint that holds at least the given stages; CheckpointError with
    a one-line reason when it is unusable."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; {WEIGHTS_HELP}")
    try:
        with warnings.catch_warnings():  # a raw pickle draws a multi-line torch warning before the refusal
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False (could run code): not repeated
        raise CheckpointError(f"{path}: not a checkpoint of this project (not plain tensors and values: damaged, "
                              f"or holding Python objects, which are never unpickled here as that could run code); "
                              f"{WEIGHTS_HELP}") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a torch checkpoint ({describe_error(exc, 160)}); {WEIGHTS_HELP}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint" + (f" (format {found!r})" if found else "")
                              + f"; {WEIGHTS_HELP}")
    missing = [stage for stage in stages if stage not in payload]
    if missing:
        raise CheckpointError(f"{path}: holds no {' and no '.join(missing)} network (a stage checkpoint? "
                              f"join two with python -m inference.checkpoint combine)")
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
    post = Postprocessing.from_dict(payload["postprocessing"])
    if unknown := sorted(post.labels() - set(labels)):
        raise CheckpointError(f"{path}: the post-processing names labels {unknown} not in {sorted(labels)}")
    models = Models(None, None, labels, {}, post, str(payload.get("trained_on", "")), {})
    for stage in NETWORK_STAGES:
        if stage not in payload:
            continue
        cls, config_cls = NETWORKS[stage]
        entry = payload[stage]
        config = _config(config_cls, entry["config"], f"{path}: {stage}")
        if config.out_channels != len(labels):
            raise CheckpointError(f"{path}: {stage} network has {config.out_channels} outputs for {len(labels)} labels")
        if config.in_channels != 1:
            raise CheckpointError(f"{path}: {stage} network takes {config.in_channels} input channels, not the CT's 1")
        if problem := input_size_problem(config.input_size):
            raise CheckpointError(f"{path}: {stage} network: {problem}")
        try:
            net = cls(config)
        except (RuntimeError, ValueError) as exc:  # widths PyTorch cannot build layers of
            raise CheckpointError(f"{path}: {stage} network cannot be built from its config ({describe_error(exc)})") from None
        try:
            net.load_state_dict(entry["state_dict"], strict=True)
        except RuntimeError as exc:
            which = " ".join(line.strip() for line in str(exc).splitlines()[:2])  # torch's title, then the keys
            raise CheckpointError(f"{path}: {stage} weights do not match its config "
                                  f"({textwrap.shorten(which, 300)})") from None
        if problem := non_finite(entry["state_dict"]):
            raise CheckpointError(f"{path}: {stage} weights are not all finite ({problem}): a diverged training run?")
        setattr(models, stage, net.float().to(device).eval())
        models.normalisation[stage] = Normalisation.from_dict(entry["normalisation"])
        models.training[stage] = dict(entry.get("training", {}))
    if not models.stages():
        raise CheckpointError(f"{path}: holds neither a coarse nor a fine network")
    return models


def combine(coarse: Models, fine: Models, trained_on: str | None = None, post_from: str | None = None) -> Models:
    """One checkpoint's models from the coarse stage of one and the fine stage of another
    (copies; the labels must agree, and the post-processing too unless `post_from`, "coarse" or
    "fine", says whose to keep: e.g. a fine stage trained for another box margin)."""
    if coarse.coarse is None or fine.fine is None:
        raise CheckpointError("combine needs a coarse stage from the first and a fine stage from the second")
    if coarse.labels != fine.labels:
        raise CheckpointError(f"the two checkpoints have different labels: {coarse.labels} and {fine.labels}")
    if post_from is None and coarse.post != fine.post:
        differ = [f"{k} {a!r} and {b!r}" for (k, a), b in zip(asdict(coarse.post).items(), asdict(fine.post).values())
                  if a != b]
        raise CheckpointError(f"the two checkpoints have different post-processing ({'; '.join(differ)}): say whose "
                              "to keep with --post-from coarse or --post-from fine")
    post = fine.post if post_from == "fine" else coarse.post
    text = trained_on or (coarse.trained_on if coarse.trained_on == fine.trained_on
                          else f"coarse: {coarse.trained_on}; fine: {fine.trained_on}")
    return Models(copy.deepcopy(coarse.coarse), copy.deepcopy(fine.fine), dict(coarse.labels),
                  {"coarse": coarse.normalisation["coarse"], "fine": fine.normalisation["fine"]}, post,
                  text, {"coarse": coarse.training.get("coarse", {}), "fine": fine.training.get("fine", {})})


def average(models: list[Models], stage: str) -> Models:
    """A copy of the first models whose `stage` network holds the mean of all their weights (a
    weight average of fine-tunes of one network: the same network apart from the input size,
    which the first one's decides); its training record names the others. One models: itself."""
    nets = [m.network(stage) for m in models]
    if any(net is None for net in nets):
        raise CheckpointError(f"averaging needs a {stage} stage in every checkpoint")
    if len(models) == 1:
        return models[0]

    def architecture(net: torch.nn.Module) -> dict:
        return {k: v for k, v in asdict(net.config).items() if k != "input_size"}

    if any(architecture(net) != architecture(nets[0]) for net in nets[1:]):
        raise CheckpointError(f"the {stage} networks differ in more than their input size: they cannot be averaged")
    for what, value in (("normalisation", lambda m: m.normalisation[stage]), ("post-processing", lambda m: m.post),
                        ("labels", lambda m: m.labels)):
        if any(value(m) != value(models[0]) for m in models[1:]):
            raise CheckpointError(f"the {stage} networks were trained with different {what}: they cannot be averaged")
    states = [net.state_dict() for net in nets]
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    averaged = replace(models[0], training=dict(models[0].training))
    net = copy.deepcopy(nets[0])
    net.load_state_dict(mean)
    setattr(averaged, stage, net)
    averaged.training[stage] = {**models[0].training.get(stage, {}),
                                "averaged_with": [m.training.get(stage, {}) for m in models[1:]]}
    return averaged


def random_models(coarse: CoarseConfig = CoarseConfig(), fine: FineConfig = FineConfig(), seed: int = 0) -> Models:
    """Randomly initialised networks (Kaiming-normal), reproducible from the seed, marked untrained."""
    torch.manual_seed(seed)
    return Models(CoarseUNet(coarse).eval(), EfficientSegNet(fine).eval(), trained_on=UNTRAINED)


def describe(path: Path, models: Models) -> dict:
    """What a checkpoint holds, as plain types."""
    return {"path": str(path), "labels": models.labels, "trained_on": models.trained_on,
            "postprocessing": models.post.to_dict(),
            **{stage: {"config": asdict(models.network(stage).config),
                       "normalisation": models.normalisation[stage].to_dict(),
                       "training": models.training.get(stage, {})} for stage in models.stages()}}


def main(argv: list[str] | None = None) -> int:
    examples = {
        "check": ["flare-checkpoint check weights/flare21_c2f.pt"],
        "combine": ["flare-checkpoint combine --coarse runs/coarse/best.pt --fine runs/fine/best.pt -o weights/mine.pt --half",
                    "flare-checkpoint combine --coarse runs/coarse/best.pt --fine runs/b/best.pt runs/a/best.pt -o avg.pt"],
        "random": ["flare-checkpoint random -o untrained.pt --seed 1"],
        "export-openvino": ["flare-checkpoint export-openvino weights/flare21_c2f.pt"]}
    parser = cli.parser("python -m inference.checkpoint", __doc__.split("\n")[0], [e for v in examples.values() for e in v])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{check,random,combine,export-openvino}")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, epilog="examples:\n" + "\n".join(
            f"  {line}" for line in examples[name]), formatter_class=argparse.RawDescriptionHelpFormatter)

    check = command("check", "validate a checkpoint and print what it holds as JSON")
    check.add_argument("path", type=Path, help="the checkpoint")
    rand = command("random", "write randomly initialised (untrained) weights")
    rand.add_argument("-o", "--out", type=Path, required=True, help="the checkpoint to write (required)")
    rand.add_argument("--seed", type=cli.at_least(0, MAX_SEED), default=0,
                      help="random seed of the weights (default %(default)s)")
    join = command("combine", "one checkpoint from the coarse stage of one and the fine stage of another (or the "
                              "mean of several fine stages)")
    join.add_argument("--coarse", type=Path, required=True, help="checkpoint holding the coarse stage (required)")
    join.add_argument("--fine", type=Path, nargs="+", required=True, metavar="FINE",
                      help="checkpoint holding the fine stage (required); several: their fine networks' weights "
                           "averaged (fine-tunes of one network; the first one's input size)")
    join.add_argument("-o", "--out", type=Path, required=True, help="the checkpoint to write (required)")
    join.add_argument("--half", action="store_true", help="store the weights as float16 (half the size; default float32)")
    join.add_argument("--trained-on", help="what the weights were trained on (default: from the two checkpoints)")
    join.add_argument("--post-from", choices=NETWORK_STAGES,
                      help="whose post-processing (component rules, the fine stage's box margin) to keep where the two "
                           "differ (default: they must agree)")
    export = command("export-openvino", "export both networks to OpenVINO beside the checkpoint (<name>.openvino/), "
                                        "which predict then uses on the CPU")
    export.add_argument("path", type=Path, help="the checkpoint")
    args = parser.parse_args(argv)
    if args.command in ("random", "combine"):
        cli.refuse_unwritable(sub.choices[args.command], "-o", args.out, folder=False)
    try:
        if args.command == "export-openvino":
            from inference import openvino_runtime

            if not openvino_runtime.installed():
                raise CheckpointError("OpenVINO is not installed (pip install openvino)")
            models = load(args.path)
            try:
                folder = openvino_runtime.export(args.path, models)
            except (RuntimeError, ValueError) as exc:  # OpenVINO could not convert or write it (OSError: below)
                print(f"error: {_written(args)}: not exported ({describe_error(exc)})", file=sys.stderr)
                return 1
            print(f"wrote {folder}")
        elif args.command == "random":
            save(args.out, random_models(seed=args.seed))
            print(f"wrote untrained weights to {args.out}")
        elif args.command == "combine":
            fine = average([load(path, stages=("fine",)) for path in args.fine], "fine")
            models = combine(load(args.coarse, stages=("coarse",)), fine, args.trained_on, args.post_from)
            save(args.out, models, half=args.half)
            print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): coarse from {args.coarse}, fine from "
                  + " averaged with ".join(map(str, args.fine)))
        else:
            models = load(args.path, stages=())
            print(json.dumps(describe(args.path, models), indent=2))
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder: nothing half-written is left
        print(f"error: {_written(args)}: {exc.strerror or describe_error(exc)}", file=sys.stderr)
        return 1
    return 0


def _written(args: argparse.Namespace) -> Path:
    """What a command writes: the checkpoint, or for export-openvino the export beside it."""
    if args.command == "export-openvino":
        from inference import openvino_runtime

        return openvino_runtime.folder_for(args.path)
    return getattr(args, "out", None) or args.path


if __name__ == "__main__":
    sys.exit(cli.run(main))
