"""Training: the recipe, the data checks, the loss, the schedule, crops, and whole runs (one
process and two with torchrun) that end in checkpoints the submission runs."""
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from flare_common.errors import InputError
from flare_common.nifti import MISCASED
from inference.checkpoint import FLARE21_LABELS, load
from inference.networks import CoarseConfig, CoarseUNet, EfficientSegNet, FineConfig
from inference.preprocessing import Normalisation
from training import phantom
from training.augment import example, fine_window, shift_brightness
from training.cache import Sample, build, cache_folder, resize_labels
from training.cache import load as load_cache
from training.config import ConfigError, default_config, given_fields, load_config
from training.data import (
    PATHOLOGICAL_LIST,
    Case,
    DataError,
    check_headers,
    dataset_json_problems,
    find_cases,
    read_case,
    read_case_list,
    split,
)
from training.loss import dice_focal_loss, one_hot
from training.train import initial_weights, lr_factor, main, unused_parameters

ROOT = Path(__file__).resolve().parents[1]
TINY = {"network": {"widths": [4, 8, 8, 16, 16]}, "batch_size": 2, "micro_batch": 1, "epochs": 2,
        "val_cases": 1, "input_size": [32, 32, 32]}
TINY_FINE = {**TINY, "network": {"widths": [4, 8, 8, 16, 16], "context_width": 8}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Six small phantoms in the FLARE22 layout (images/, labels/), with a list of lesion cases."""
    root = tmp_path_factory.mktemp("phantoms")
    assert phantom.main(["--out", str(root), "--cases", "6", "--seed", "11", "--max-side", "48"]) == 0
    return root


def config_file(folder: Path, values: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(values))
    return path


def train(data: Path, out: Path, stage: str, values: dict, *extra: str) -> int:
    return main(["--stage", stage, "--data", str(data), "--out", str(out), "--config", str(config_file(out.parent, values)),
                 "--precision", "fp32", *extra])


def test_default_recipe_is_the_papers():
    coarse, fine = default_config("coarse"), default_config("fine")
    assert coarse.input_size == (160, 160, 160) and fine.input_size == (192, 192, 192)
    for c in (coarse, fine):
        assert (c.lr, c.betas, c.weight_decay, c.dropout, c.batch_size, c.epochs) == (0.01, (0.9, 0.99), 1e-5, 0.2, 16, 200)
        assert (c.focal_alpha, c.focal_gamma, c.pathological_repeats, c.folds) == (0.5, 2.0, 3, 5)
        assert c.normalisation == {"clip_hu": [-325.0, 325.0], "zscore": True}
    assert fine.margin_mm[0] < 20 < fine.margin_mm[1]
    assert coarse.network_config().widths == (8, 16, 32, 64, 128) and coarse.network_config().dropout == 0.2


def test_config_file_and_command_line_override_and_bad_values_are_named(tmp_path):
    path = config_file(tmp_path, {"lr": 0.001, "input_size": [64, 64, 64], "network": {"widths": [4, 8, 8, 16, 16]}})
    config = load_config("fine", path, {"max_steps": 10})
    assert (config.lr, config.input_size, config.max_steps) == (0.001, (64, 64, 64), 10)
    assert config.network_config().widths == (4, 8, 8, 16, 16) and config.network_config().input_size == (64, 64, 64)
    for values, message in [({"learning_rate": 1}, "unknown field"), ({"input_size": [60, 64, 64]}, "multiple of 16"),
                            ({"fold": 7}, "fold 7"), ({"network": {"depth": 3}}, "network"),
                            ({"stage": "coarse"}, "written for stage"), ({"input_size": [16, 16, 16]}, "not all 16"),
                            ({"input_size": 64}, "input_size: 64 is not a list of 3 numbers"),
                            ({"lr": "0.01"}, "lr: '0.01' is not a finite number"), ({"epochs": 2.5}, "not a whole number"),
                            ({"cache_scale": math.nan}, "cache_scale: nan is not a finite number"),
                            ({"max_minutes": math.inf}, "max_minutes: inf is not a finite number"),
                            ({"lr": 1e39}, "0 < lr <= 1000"),  # float32 would overflow in the optimiser
                            ({"margin_mm": [math.nan, 20]}, "margin_mm: .* is not a list of 2 numbers"),
                            ({"postprocessing": {"box_margin_mm": 40}}, "postprocessing: missing key 'components_kept'"),
                            ({"normalisation": {"clip_hu": [-100, 100], "zscore": True, "clip": 1}},
                             "normalisation: unknown key"),
                            ({"normalisation": {"clip_hu": [-325], "zscore": True}},
                             r"normalisation: clip_hu must be an increasing pair of HU, e\.g\. \[-325, 325\], got \[-325\]"),
                            ({"normalisation": {"clip_hu": ["-325", 325], "zscore": True}}, "increasing pair of HU"),
                            ({"postprocessing": {**default_config("fine").postprocessing, "components_kept": {"9": 2}}},
                             r"postprocessing: labels \[9\] are no organ's"),
                            ({"network": None}, "not a JSON object"), ({"margin_mm": [5]}, "list of 2 numbers"),
                            ({"pathological_repeats": 0}, "pathological_repeats 0"), ({"folds": 1}, "folds 1"),
                            ({"seed": -1}, "seed"), ({"lr_milestones": [0.9, 0.5]}, "increasing"),
                            ({"lr_gamma": 0}, "lr_gamma"), ({"organ_hu_shift": -5}, "HU shifts"),
                            ({"betas": [1.5, 0.99]}, r"betas \(1.5, 0.99\): each in \[0, 1\)"),
                            ({"network": {"out_channels": 3}}, "out_channels cannot be set here"),
                            ({"network": {"dropout": 0.5}}, "dropout cannot be set here"),
                            ({"network": {"widths": [0, 8, 8, 16, 16]}}, "config.json: network: .* widths must be"),
                            ({"seed": 2**64}, r"seed must be in 0\.\.9223372036854775807")]:  # torch.manual_seed's range
        with pytest.raises(ConfigError, match=message):
            load_config("fine", config_file(tmp_path, values), {})
    with pytest.raises(ConfigError, match=r"command line: seed must be"):
        load_config("fine", None, {"seed": 2**63})
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"lr": 0.002}).encode())  # saved by a Windows editor
    assert load_config("fine", tmp_path / "bom.json", {}).lr == 0.002 and given_fields(tmp_path / "bom.json", {}) == {"lr"}
    (tmp_path / "broken.json").write_text("{lr: 1")
    with pytest.raises(ConfigError, match="broken.json"):
        load_config("fine", tmp_path / "broken.json", {})


def test_step_decay_and_the_loss():
    assert [lr_factor(s, 100, (0.66, 0.86), 0.1) for s in (0, 65, 66, 85, 86, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.uint8)
    labels[0, 2:6, 2:6, 2:6] = 1
    labels[0, 0, 0, :4] = 4
    targets = one_hot(labels, 4)
    assert targets.shape == (1, 4, 8, 8, 8) and targets[0, 0].sum() == 64 and targets[0, 3].sum() == 4
    perfect = (targets * 2 - 1) * 20  # confident and right
    wrong = -perfect
    assert dice_focal_loss(perfect, labels) < 0.3  # organs 2 and 3 are absent: their Dice terms are 0 at best
    assert dice_focal_loss(wrong, labels) > 1.5
    assert dice_focal_loss(perfect, labels, dice_weight=0.0) < 1e-6


def test_split_is_deterministic_disjoint_and_complete(data):
    cases = find_cases(data)
    folds = [split(cases, 3, k, seed=5) for k in range(3)]
    held_out = [name for _, val in folds for name in (c.name for c in val)]
    assert sorted(held_out) == sorted(c.name for c in cases)
    for train_cases, val in folds:
        assert not {c.name for c in train_cases} & {c.name for c in val}
    assert split(cases, 3, 1, seed=5) == folds[1] and split(cases, 3, None, seed=5) == (cases, [])


@pytest.mark.parametrize("edge_padding", [True, False])
def test_the_fine_cache_continues_an_organ_cut_by_the_scan_past_its_edge(tmp_path, edge_padding):
    """As at inference, the fine stage learns from crops that go on past the scan's edge where an
    organ is cut by it (the edge slice repeated, image and labels), and end there without edge
    padding; the organs' box is recorded where the organ lies in the cached region."""
    shape, spacing = (40, 40, 20), (2.0, 2.0, 3.0)
    labels = np.zeros(shape, np.uint8)
    labels[10:30, 12:28, 8:] = 1  # cut by the top of the scan
    hu = np.where(labels == 1, 80, -100).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), tmp_path / "c_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "c.nii.gz")
    config = default_config("fine")
    config = dataclasses.replace(config, input_size=(16, 16, 16), margin_mm=(3.0, 15.0),
                                 postprocessing={**config.postprocessing, "edge_padding": edge_padding})
    folder = cache_folder(tmp_path / "cache", config)
    folder.mkdir(parents=True)
    case = Case("c", tmp_path / "c_0000.nii.gz", tmp_path / "c.nii.gz")
    build(case, config, {1: "liver"}, folder)
    sample = load_cache([case], config, tmp_path / "cache")[0]
    # z: voxels 8..20 plus 5 of margin below (15 mm at 3 mm) and, padded, 5 past the top
    extent = 12 + 5 + (5 if edge_padding else 0)
    assert sample.spacing[2] == pytest.approx(extent * 3.0 / sample.labels.shape[2])
    lo, hi = sample.organs[2]
    assert lo == pytest.approx(5 * sample.labels.shape[2] / extent) and hi == pytest.approx(17 * sample.labels.shape[2] / extent)
    top = sample.labels[:, :, -1]
    assert top.any() and np.array_equal(top, sample.labels[:, :, int(np.ceil(hi)) - 1])  # the organ goes on to the top
    assert sample.labels[:, :, int(np.ceil(hi)):].any() == edge_padding
    assert cache_folder(tmp_path, config) != cache_folder(tmp_path, dataclasses.replace(
        config, postprocessing={**config.postprocessing, "edge_padding": not edge_padding}))


def test_a_damaged_cache_entry_is_made_again_and_a_missing_one_is_named(data, tmp_path):
    """A case's cache is written under temporary names and renamed (nothing half-written is left
    beside it); a record that cannot be read is made again; cached arrays removed since are named."""
    from training.cache import prepare
    config = dataclasses.replace(default_config("coarse"), input_size=(16, 16, 16))
    cases = find_cases(data)[:2]
    assert prepare(cases, config, FLARE21_LABELS, tmp_path) == []
    folder = cache_folder(tmp_path, config)
    names = sorted(p.name for p in folder.iterdir())
    assert [n.split("-")[0] + n[n.index("."):] for n in names] == sorted(
        f"{c.name}{suffix}" for c in cases for suffix in (".json", ".image.npy", ".labels.npy"))
    next(folder.glob(f"{cases[0].name}-*.json")).write_text('{"source": [1, 2')  # cut short
    assert prepare(cases, config, FLARE21_LABELS, tmp_path) == []
    assert len(load_cache(cases, config, tmp_path)) == 2
    next(folder.glob(f"{cases[1].name}-*.labels.npy")).unlink()
    with pytest.raises(InputError, match=f"{cases[1].name}.*cached files unreadable.*remove them and run again"):
        load_cache(cases, config, tmp_path)


def test_a_cache_that_cannot_be_written_is_the_runs_problem_not_a_cases(data, tmp_path, monkeypatch):
    """A full disk under the cache stops the run naming the cache's file (exit 1 by the command's
    handler), instead of a line blaming each input image."""
    import errno

    import training.cache
    config = dataclasses.replace(default_config("coarse"), input_size=(16, 16, 16))
    folder = cache_folder(tmp_path, config)

    def full_disk(case, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / f"{case.name}.image.npy"))

    monkeypatch.setattr(training.cache, "build", full_disk)
    with pytest.raises(OSError) as raised:
        training.cache.prepare(find_cases(data)[:2], config, FLARE21_LABELS, tmp_path)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename.startswith(str(folder))


def test_ctrl_c_while_processes_preprocess_starts_no_other_case(data, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) as the first case is done: the cases being made finish, the rest never
    start (the run stops now, not after the whole data set)."""
    import training.cache
    from training.cache import prepare

    class StoppedBar:
        def __init__(self, *args, **kwargs):
            pass

        def update(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(training.cache, "tqdm", StoppedBar)
    config = dataclasses.replace(default_config("coarse"), input_size=(16, 16, 16))
    cases = find_cases(data) * 4  # 24 cases of 6 names: each case is made again until the first is cached
    cases = [dataclasses.replace(c, name=f"{c.name}_{i}") for i, c in enumerate(cases)]
    with pytest.raises(KeyboardInterrupt):
        prepare(cases, config, FLARE21_LABELS, tmp_path, workers=2)
    assert len(list(cache_folder(tmp_path, config).glob("*.json"))) < len(cases) // 2


def test_data_sets_sharing_a_cache_never_read_each_others_cases(data, tmp_path):
    """Two sets with the same case names (every phantom set has them) cached in one folder: each
    loads its own arrays; a case whose files change after they were prepared is refused at loading."""
    from training.cache import prepare
    config = dataclasses.replace(default_config("coarse"), input_size=(16, 16, 16))
    other = tmp_path / "other"
    shutil.copytree(data, other)
    label = nib.load(other / "labels" / "phantom_0000.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(label.shape, np.uint8), label.affine, label.header),
             other / "labels" / "phantom_0000.nii.gz")
    ours, theirs = find_cases(data)[:1], find_cases(other)[:1]
    assert ours[0].name == theirs[0].name
    assert prepare(ours, config, FLARE21_LABELS, tmp_path / "cache") == []
    assert prepare(theirs, config, FLARE21_LABELS, tmp_path / "cache") == []
    assert load_cache(ours, config, tmp_path / "cache")[0].labels.any()
    assert not load_cache(theirs, config, tmp_path / "cache")[0].labels.any()
    os.utime(other / "labels" / "phantom_0000.nii.gz", ns=(1, 1))  # changed after it was prepared
    with pytest.raises(InputError, match="changed since they were preprocessed: run again"):
        load_cache(theirs, config, tmp_path / "cache")


def test_cache_folder_changes_with_the_stages_anti_aliasing(tmp_path, monkeypatch):
    """A cache resampled with plain trilinear sampling is never reused once the stage's input is
    anti-aliased (or the other way round)."""
    import training.cache
    coarse, fine = default_config("coarse"), default_config("fine")
    before = cache_folder(tmp_path, coarse), cache_folder(tmp_path, fine)
    monkeypatch.setattr(training.cache, "ANTIALIASED_STAGES", ("coarse", "fine"))
    assert cache_folder(tmp_path, coarse) != before[0]
    assert cache_folder(tmp_path, fine) == before[1]  # its own sampling did not change


def test_fine_crops_keep_the_organs_and_brightness_moves_each_organ():
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[10:30, 12:28, 15:25] = 1
    sample = Sample("case", np.zeros((40, 40, 40), np.int16), labels, (2.0, 2.0, 2.0), ((10, 30), (12, 28), (15, 25)))
    rng = np.random.default_rng(0)
    for _ in range(20):
        box = fine_window(sample, (4.0, 12.0), rng)
        for (lo, hi), s in zip(sample.organs, box):
            assert s.start <= lo - 2 and s.stop >= hi + 2 and s.start >= lo - 6 and s.stop <= hi + 6
    image = np.zeros((4, 4, 4), np.float32)
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[..., :2] = 1
    lab[..., 2] = 3
    shifted = shift_brightness(image, lab, 50.0, 0.0, 4, np.random.default_rng(1))
    assert shifted.dtype == np.float32
    values = [float(np.unique(shifted[lab == k]).item()) for k in (0, 1, 3)]
    assert values[0] == 0 and 0 < abs(values[1]) <= 50 and 0 < abs(values[2]) <= 50 and values[1] != values[2]


def test_a_pair_from_a_read_only_cache_is_its_own_copy(recwarn):
    """The cache is memory-mapped read-only; a coarse crop can be the whole cached volume, and
    the pair must not share (or warn about) the read-only buffer."""
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    image = np.full((16, 16, 16), 40, np.int16)
    labels.flags.writeable = image.flags.writeable = False
    sample = Sample("case", image, labels, (2.0, 2.0, 2.0), ((4, 12), (4, 12), (4, 12)))
    config = dataclasses.replace(default_config("coarse"), input_size=(16, 16, 16), coarse_crop=(1.0, 1.0))
    x, y = example(sample, config, Normalisation(), 4, np.random.default_rng(0))
    assert tuple(x.shape) == (1, 16, 16, 16) and torch.equal(y, torch.from_numpy(labels.copy()))
    y[0, 0, 0] = 2  # writable, and not the cache's memory
    assert labels[0, 0, 0] == 0
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_train_both_stages_resume_combine_and_predict(data, tmp_path, capsys):
    out = tmp_path / "runs"
    assert train(data, out / "coarse", "coarse", TINY) == 0
    assert {"best.pt", "last.pt", "resume.pt", "log.csv", "curve.png", "config.json", "split.json"} <= {
        p.name for p in (out / "coarse").iterdir()}
    log = (out / "coarse" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,step,lr,train_loss") and "dsc_pancreas" in log[0] and len(log) == 3
    # resume: two more epochs continue from the saved state
    assert train(data, out / "coarse", "coarse", {**TINY, "epochs": 4}, "--resume") == 0
    rows = (out / "coarse" / "log.csv").read_text().splitlines()
    assert len(rows) == 5 and float(rows[1].split(",")[2]) == 0.01  # the LR the epoch's steps ran at
    err = capsys.readouterr().err
    assert "resume: epochs 2 -> 4" in err and "resuming after epoch 2" in err
    # a resume that names no schedule keeps the run's own (4 epochs: done), and one asking for fewer
    # steps than were trained is refused
    unscheduled = {k: v for k, v in TINY.items() if k != "epochs"}
    assert train(data, out / "coarse", "coarse", unscheduled, "--resume") == 0
    assert "resume:" not in capsys.readouterr().err and len((out / "coarse" / "log.csv").read_text().splitlines()) == 5
    assert train(data, out / "coarse", "coarse", {**unscheduled, "max_steps": 1}, "--resume") == 2
    assert "more than the 1 this start asks for: nothing to train" in capsys.readouterr().err
    # a resume with another recipe than the run's (only the schedule may change) is refused by name,
    # and the run's records stay as they were
    recorded = (out / "coarse" / "config.json").read_bytes()
    assert train(data, out / "coarse", "coarse", {**TINY, "epochs": 6, "lr": 0.02}, "--resume") == 2
    assert "the run was made with lr 0.01, not 0.02" in capsys.readouterr().err
    assert (out / "coarse" / "config.json").read_bytes() == recorded
    # ... and so is one that would sample other cases more often, or a new run over the old one
    (tmp_path / "no-lesions.txt").write_text("")
    assert train(data, out / "coarse", "coarse", {**TINY, "epochs": 6}, "--resume",
                 "--pathological", str(tmp_path / "no-lesions.txt")) == 2
    lesions = sorted(json.loads((out / "coarse" / "split.json").read_text())["pathological"])
    assert f"sampled other cases with lesions more often (no longer listed: {', '.join(lesions)})" in capsys.readouterr().err
    # ... or that names the other stage, or another data set whose cases have the same names
    assert train(data, out / "coarse", "fine", TINY_FINE, "--resume") == 2
    assert "a run of the coarse stage, not the fine stage: resume with --stage coarse" in capsys.readouterr().err
    other = tmp_path / "other-data"
    shutil.copytree(data, other)
    first = json.loads((out / "coarse" / "split.json").read_text())["train"][0]
    image = next((other / "images").glob(f"{first}_0000.nii*"))
    ct = nib.load(image)
    nib.save(nib.Nifti1Image(np.asarray(ct.dataobj) + 1, ct.affine, ct.header), image)  # 1 HU more: another file
    assert image.stat().st_size != next((data / "images").glob(f"{first}_0000.nii*")).stat().st_size
    assert train(other, out / "coarse", "coarse", {**TINY, "epochs": 6}, "--resume") == 2
    assert f"the run trained on other files of the same names ({first}: another --data" in capsys.readouterr().err
    assert train(data, out / "coarse", "coarse", TINY) == 2
    assert "holds a run already (resume.pt, best.pt, last.pt, log.csv): continue it with --resume" in capsys.readouterr().err
    assert (out / "coarse" / "config.json").read_bytes() == recorded

    assert train(data, out / "fine", "fine", TINY_FINE, "--input-size", "48", "32", "32") == 0
    fine = load(out / "fine" / "best.pt", stages=("fine",))
    assert fine.fine.config.input_size == (48, 32, 32) and fine.training["fine"]["config"]["stage"] == "fine"
    assert fine.normalisation["fine"].clip_hu == (-325.0, 325.0) and fine.post.box_margin_mm == 20.0
    assert (out / "cache").is_dir()  # preprocessed once, beside the runs

    weights = tmp_path / "weights.pt"
    assert subprocess.run([sys.executable, "-m", "inference.checkpoint", "combine", "--coarse", str(out / "coarse" / "best.pt"),
                           "--fine", str(out / "fine" / "best.pt"), "-o", str(weights), "--half"], cwd=ROOT).returncode == 0
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["sh", str(ROOT / "predict.sh"), str(data / "images"), str(tmp_path / "pred"),
                           "--weights", str(weights)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "pred").iterdir())) == 6
    assert "notice: weights weights.pt: 4 training case(s) of phantoms" in done.stderr  # what it runs, in one line


def test_a_step_with_a_non_finite_loss_is_skipped_and_a_diverged_run_stops(data, tmp_path, monkeypatch, capsys):
    calls = []

    def sometimes_nan(logits, *args, **kwargs):  # NaN in the 1st step's loss, the 2nd step's gradients
        calls.append(1)
        loss = dice_focal_loss(logits, *args, **kwargs)
        if len(calls) == 2:
            return loss * math.nan
        if len(calls) == 4:  # a finite loss (sqrt(0) = 0) whose gradient is NaN (inf x 0)
            return loss + torch.sqrt((logits * 0).sum())
        return loss

    monkeypatch.setattr("training.train.dice_focal_loss", sometimes_nan)
    # 4 training cases (5 examples with a lesion case x3) in steps of 2: the 5th example is a step of its own
    assert train(data, tmp_path / "skip", "coarse", {**TINY, "epochs": 1, "val_cases": 0}) == 0
    log = (tmp_path / "skip" / "log.csv").read_text().splitlines()
    assert log[1].split(",")[1] == "3"  # every step counted, the partial one at the end included
    net = load(tmp_path / "skip" / "last.pt", stages=("coarse",)).coarse
    assert all(torch.isfinite(p).all() for p in net.parameters())  # neither NaN step was applied

    monkeypatch.setattr("training.train.dice_focal_loss", lambda *a, **k: dice_focal_loss(*a, **k) * math.nan)
    monkeypatch.setattr("training.train.MAX_SKIPPED_STEPS", 2)
    assert train(data, tmp_path / "nan", "coarse", {**TINY, "epochs": 2, "val_cases": 0}) == 1
    assert "the loss or its gradients were not finite in 2 steps in a row" in capsys.readouterr().err

    monkeypatch.setattr("training.train.dice_focal_loss", dice_focal_loss)
    real_step = torch.optim.Adam.step

    def step_into_inf(self, *args, **kwargs):  # finite gradients, weights stepped into inf (as a huge --lr can)
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(math.inf)
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step_into_inf)
    monkeypatch.setattr("training.train.MAX_SKIPPED_STEPS", 100)  # the steps after it are skipped (NaN loss)
    assert train(data, tmp_path / "huge", "coarse", {**TINY, "epochs": 1, "val_cases": 0}) == 1
    assert "the weights stopped being finite by step" in capsys.readouterr().err
    assert not (tmp_path / "huge" / "last.pt").exists()


def test_a_run_starts_from_a_checkpoints_weights_at_another_size(data, tmp_path, capsys):
    assert train(data, tmp_path / "small", "coarse", {**TINY, "epochs": 1, "val_cases": 0}) == 0
    start = load(tmp_path / "small" / "best.pt", stages=("coarse",)).coarse
    larger = {**TINY, "epochs": 1, "val_cases": 0, "lr": 1e-12, "input_size": [48, 48, 48]}
    assert train(data, tmp_path / "large", "coarse", larger, "--init", str(tmp_path / "small" / "best.pt")) == 0
    tuned = load(tmp_path / "large" / "best.pt", stages=("coarse",))
    assert tuned.coarse.config.input_size == (48, 48, 48)
    assert tuned.training["coarse"]["initialised_from"] == "small/best.pt"  # its run's folder: every run has a best.pt
    for before, after in zip(start.parameters(), tuned.coarse.parameters()):
        torch.testing.assert_close(before, after, atol=1e-5, rtol=0)  # LR ~0: the weights it started from

    wider = {**TINY, "network": {"widths": [8, 8, 8, 16, 16]}}
    assert train(data, tmp_path / "wider", "coarse", wider, "--init", str(tmp_path / "small" / "best.pt")) == 2
    assert "its coarse network has other widths than this run's" in capsys.readouterr().err


def test_bad_data_refuses_before_training(data, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    cases = find_cases(bad)
    label = nib.load(cases[0].label)
    wrong = np.asarray(label.dataobj).copy()
    wrong[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(wrong, label.affine, label.header), str(cases[0].label))  # unknown label
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:-1], label.affine), str(cases[1].label))  # shape
    shifted = label.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(nib.load(cases[2].label).dataobj), shifted), str(cases[2].label))  # affine
    cases[3].image.unlink()  # missing pair
    assert train(bad, tmp_path / "run", "coarse", TINY) == 2
    err = capsys.readouterr().err
    assert f"{cases[3].label}: no image" in err
    assert not (tmp_path / "run" / "last.pt").exists()
    (bad / "labels" / cases[3].label.name).unlink()  # pairs complete: header problems come next
    assert train(bad, tmp_path / "run", "coarse", TINY) == 2
    err = capsys.readouterr().err
    assert f"{cases[1].label}: shape" in err and f"{cases[2].label}: affine differs" in err
    for case in cases[1:3]:
        shutil.copy(data / "labels" / case.label.name, case.label)
    image = nib.load(cases[1].image)
    image.header["pixdim"][1:4] = 0  # a spacing of 0: refused naming the file, no bare nibabel line beside it
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, image.header), str(cases[1].image))
    assert train(bad, tmp_path / "run", "coarse", TINY) == 2
    err = capsys.readouterr().err
    assert f"{cases[0].label}: unknown label value(s) [9]" in err and "nothing was trained" in err
    assert f"{cases[1].image}:" in err
    assert not (tmp_path / "run" / "last.pt").exists()

    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    assert train(tmp_path / "empty", tmp_path / "run", "coarse", TINY) == 2
    assert "no .nii.gz or .nii files" in capsys.readouterr().err
    for argument, extra in (("--data", ()), ("--resume", ("--resume",))):  # refused before any folder is made
        with pytest.raises(SystemExit) as exit_:
            train(tmp_path / ("nothing" if not extra else "empty"), tmp_path / "fresh" / "new", "coarse", TINY, *extra)
        assert exit_.value.code == 2 and f"error: {argument}" in capsys.readouterr().err
        assert not (tmp_path / "fresh" / "new").exists() and not (tmp_path / "fresh" / "cache").exists()
    with pytest.raises(DataError, match="no training layout"):
        find_cases(tmp_path)


def test_a_case_with_two_label_maps_and_a_broken_file_of_a_pair_are_named(data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    cases = find_cases(bad)
    shutil.copy(cases[0].label, bad / "labels" / f"{cases[0].name}.nii")  # two label maps: which one to train on?
    with pytest.raises(DataError) as found:
        find_cases(bad)
    (problem,) = found.value.problems
    assert problem.startswith(str(bad / "labels" / cases[0].name)) and problem.endswith(
        f": same case as {cases[0].name}.nii" + ("" if problem.split(":")[0].endswith(".gz") else ".gz"))
    (bad / "labels" / f"{cases[0].name}.nii").unlink()
    cases[1].image.write_bytes(b"not a CT")
    cases[2].label.write_bytes(b"")
    assert check_headers(cases[1])[0].startswith(f"{cases[1].image}: unreadable (")  # the broken one, alone
    assert check_headers(cases[2]) == [f"{cases[2].label}: an empty file"]


def test_header_checks_keep_nibabels_bare_lines_off_stderr(data, tmp_path):
    """A spacing of 0 is refused on reading, naming the file; nibabel's own "pixdim[1,2,3] should be
    non-zero" line, which names none, never reaches the terminal."""
    case = find_cases(data)[0]
    nib.save(nib.load(case.image), str(tmp_path / "zero.nii"))
    raw = bytearray((tmp_path / "zero.nii").read_bytes())
    raw[88:92] = bytes(4)  # pixdim[3], float32 at byte 88 of the header: 0 (nibabel's own save would repair it)
    (tmp_path / "zero.nii").write_bytes(bytes(raw))
    code = ("import sys; from pathlib import Path; from training.data import Case, check_headers; "
            "print(check_headers(Case('x', Path(sys.argv[1]), Path(sys.argv[2]))))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "zero.nii"), str(case.label)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # a process of its own: nibabel's stderr
    assert done.stdout.strip() == "[]" and done.stderr == "", done.stderr


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stop_sent_to_the_whole_process_group_ends_training_with_one_line(data, tmp_path):
    """SIGTERM to the group (a scheduler's stop, a closed terminal's SIGHUP) reaches the data
    loader's processes too: training still ends as it does for its own stop (exit 143, how to
    continue), no DataLoader traceback, no process left behind."""
    # the paper's network (not TINY): its steps are long enough for the stop to land in one
    config = config_file(tmp_path, {key: value for key, value in TINY.items() if key != "network"} | {"epochs": 1000})
    err_file = tmp_path / "err.txt"
    with err_file.open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "training.train", "--stage", "coarse", "--data", str(data),
                                    "--out", str(tmp_path / "run"), "--config", str(config), "--precision", "fp32",
                                    "--workers", "2", "--cache", str(tmp_path / "cache")],
                                   stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, cwd=ROOT)
        try:
            deadline = time.monotonic() + 600
            while "epoch 1:" not in err_file.read_text() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)  # into the next epoch's steps, its loader processes working
            os.killpg(process.pid, signal.SIGTERM)
            assert process.wait(timeout=300) == 143
            deadline = time.monotonic() + 60
            while _group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _group_alive(process.pid), "a data loader process outlived training"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    text = err_file.read_text()
    assert "terminated: continue with --resume" in text and "Traceback" not in text, text


def test_the_recipe_prints_without_data_and_training_needs_both_folders(capsys):
    assert main(["--stage", "fine", "--print-config", "--input-size", "96"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == [96, 96, 96]
    with pytest.raises(SystemExit) as exc:
        main(["--stage", "fine", "--data", "somewhere"])
    assert exc.value.code == 2 and "required: --out" in capsys.readouterr().err


def test_a_missing_init_checkpoint_is_named_once():
    missing = Path("runs") / "none.pt"
    with pytest.raises(DataError) as exc:
        initial_weights(missing, default_config("coarse"))
    assert exc.value.problems[0].startswith(f"--init {missing}: weights file not found")
    assert exc.value.problems[0].count(str(missing)) == 1


def test_options_that_cannot_work_refuse_before_preprocessing(data, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    for extra, message in [(("--workers", "-1"), "--workers -1: 0 or more"),
                           (("--device", "cpu", "--precision", "fp16"), "--precision fp16 needs a CUDA device"),
                           (("--cache", str(tmp_path / "a-file")), "exists and is not a folder")]:
        with pytest.raises(SystemExit) as stop:
            main(["--stage", "coarse", "--data", str(data), "--out", str(tmp_path / "run"), *extra])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--stage", "coarse", "--data", str(data), "--out", str(tmp_path / "a-file")])
    assert "--out" in capsys.readouterr().err and not (tmp_path / "cache").exists()  # nothing preprocessed


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_a_stage_without_any_organ_refuses_to_train(data, tmp_path, capsys, stage):
    empty = tmp_path / "empty"
    shutil.copytree(data, empty)
    for label in (empty / "labels").iterdir():
        image = nib.load(label)
        nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(label))
    assert train(empty, tmp_path / "run", stage, {**(TINY_FINE if stage == "fine" else TINY), "epochs": 1},
                 "--fold", "all") == 2
    assert f"no training case has an organ labelled: the {stage} stage has nothing to learn" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("layout", [("TrainingImg", "TrainingMask"), ("imagesTr", "labelsTr")])
def test_flare21_and_nnunet_layouts(data, tmp_path, layout):
    shutil.copytree(data / "images", tmp_path / layout[0])
    shutil.copytree(data / "labels", tmp_path / layout[1])
    assert [c.name for c in find_cases(tmp_path)] == [c.name for c in find_cases(data)]


def test_labels_are_resampled_from_the_voxel_each_centre_lies_in():
    """Output voxel i of n along an axis of m has its centre at (i + 0.5) * m / n input voxels; it
    takes that input voxel, exactly (2 -> 41 puts centre 20 on the boundary 1.0: voxel 1), and
    agrees with PyTorch's "nearest-exact" but for such boundaries."""
    rng = np.random.default_rng(5)
    pairs = [((2, 3, 5), (41, 3, 2)), ((1, 7, 9), (4, 1, 9))]
    pairs += [(tuple(int(x) for x in rng.integers(1, 60, 3)), tuple(int(x) for x in rng.integers(1, 60, 3))) for _ in range(40)]
    for shape, size in pairs:
        labels = rng.integers(0, 5, shape, dtype=np.uint8)
        source = [[math.floor(Fraction(2 * i + 1, 2 * n) * m) for i in range(n)] for m, n in zip(shape, size)]
        expected = labels[np.ix_(*source)]
        assert np.array_equal(resize_labels(labels, size), expected), (shape, size)
        torch_picks = torch.nn.functional.interpolate(torch.from_numpy(labels)[None, None].float(), size=size,
                                                      mode="nearest-exact")[0, 0].numpy()
        assert (torch_picks == expected).mean() > 0.9


def test_cases_named_like_images_still_pair_by_the_channel_suffix(tmp_path):
    """nnU-Net's cases p and p_0000: images p_0000 and p_0000_0000, labels p and p_0000."""
    for folder, names in (("imagesTr", ("p_0000", "p_0000_0000")), ("labelsTr", ("p", "p_0000"))):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / f"{name}.nii.gz").write_bytes(b"")
    assert [(c.name, c.image.name) for c in find_cases(tmp_path)] == [("p", "p_0000.nii.gz"), ("p_0000", "p_0000_0000.nii.gz")]


def test_upper_case_nifti_names_are_refused_by_name_not_skipped(tmp_path):
    """A pair named P.NII.GZ would otherwise leave training without a word: each such file is a
    problem of its own, named (the other readers of the project skip them likewise)."""
    for folder, names in (("imagesTr", ("a_0000.nii.gz", "B_0000.NII.GZ")), ("labelsTr", ("a.nii.gz", "B.Nii.Gz"))):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    with pytest.raises(DataError) as exc:
        find_cases(tmp_path)
    assert exc.value.problems == [f"{tmp_path / 'imagesTr' / 'B_0000.NII.GZ'}: {MISCASED}",
                                  f"{tmp_path / 'labelsTr' / 'B.Nii.Gz'}: {MISCASED}"]


def test_nnunet_dataset_json_must_number_the_organs_as_the_networks_do(data, tmp_path):
    shutil.copytree(data / "images", tmp_path / "imagesTr")
    shutil.copytree(data / "labels", tmp_path / "labelsTr")
    listing = tmp_path / "dataset.json"
    listing.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "kidneys": 2, "spleen": 3, "Pancreas": 4}}))
    assert dataset_json_problems(tmp_path, FLARE21_LABELS) == []  # v2, plural and capitals
    listing.write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}}))
    assert dataset_json_problems(tmp_path, FLARE21_LABELS) == []  # v1
    listing.write_text(json.dumps({"labels": {"background": 0, "spleen": 1, "kidney": 2, "liver": 3, "pancreas": 4}}))
    [problem] = dataset_json_problems(tmp_path, FLARE21_LABELS)
    assert problem.startswith(f"{listing}: labels 1 spleen, 3 liver are not the networks' numbering")
    listing.write_text(json.dumps({"labels": {"background": "0", "liver": 1.0, "kidney": "2", "spleen": 3, "pancreas": 4}}))
    assert dataset_json_problems(tmp_path, FLARE21_LABELS) == []  # whole numbers however written
    for labels, message in (({"background": 0, "organs": [1, 2, 3, 4]}, "regions"),
                            ({"background": 0, "liver": 1, "Liver": 1}, "not understood"),
                            ({"0": "background", "liver": 1}, "not understood")):
        listing.write_text(json.dumps({"labels": labels}))
        assert message in dataset_json_problems(tmp_path, FLARE21_LABELS)[0]
    listing.write_text(json.dumps({"labels": {"background": 0, "spleen": 1, "kidney": 2, "liver": 3, "pancreas": 4}}))
    assert train(tmp_path, tmp_path / "run", "coarse", TINY) == 2  # refused before anything is read


def test_files_whose_names_misstate_their_compression_are_trained_on(data, tmp_path):
    """gzip data named .nii and plain data named .nii.gz: read as the submission and the scorer
    read them (by their first bytes), in the header check as in reading."""
    import gzip

    from training.data import check_headers
    root = tmp_path / "named"
    shutil.copytree(data, root)
    first, second = find_cases(root)[:2]
    first.image.rename(first.image.with_name(first.image.name.removesuffix(".gz")))
    second.label.write_bytes(gzip.decompress(second.label.read_bytes()))
    cases = {c.name: c for c in find_cases(root)}
    for case in (cases[first.name], cases[second.name]):
        assert check_headers(case) == []
        expected = read_case(next(c for c in find_cases(data) if c.name == case.name), FLARE21_LABELS)
        got = read_case(case, FLARE21_LABELS)
        assert np.array_equal(got[1], expected[1]) and np.array_equal(got[0].data, expected[0].data)


def test_a_file_that_is_not_one_volume_is_named_alone(data, tmp_path):
    from training.data import check_headers
    case = find_cases(data)[0]
    label = nib.load(case.label)
    two = np.stack([np.asarray(label.dataobj)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(two, label.affine), str(tmp_path / "two.nii.gz"))
    problems = check_headers(dataclasses.replace(case, label=tmp_path / "two.nii.gz"))
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path / 'two.nii.gz'}: ") and str(case.image) not in problems[0]


def test_real_data_quirks_are_read_as_a_team_means_them(data, tmp_path, capsys):
    """Float label maps with float noise, a case whose own name ends in _0000, a pathological
    list with a byte-order mark and folders, macOS's '._' files, and an image with NaN voxels
    (trained on, with a notice naming the file)."""
    root = tmp_path / "real"
    shutil.copytree(data, root)
    cases = find_cases(root)
    label = nib.load(cases[0].label)
    noisy = np.asarray(label.dataobj).astype(np.float32) * np.float32(0.99999994)
    nib.save(nib.Nifti1Image(noisy, label.affine), str(cases[0].label))
    assert np.array_equal(read_case(cases[0], FLARE21_LABELS)[1], read_case(find_cases(data)[0], FLARE21_LABELS)[1])
    image = nib.load(cases[1].image)
    holes = np.asarray(image.dataobj).astype(np.float32)
    holes[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(holes, image.affine), str(cases[1].image))
    cases[2].label.rename(cases[2].label.with_name(cases[2].image.name))  # image and labels named alike, x_0000
    (root / "images" / f"._{cases[0].image.name}").write_bytes(b"\x00\x05\x16\x07")
    (root / "labels" / f"._{cases[0].label.name}").write_bytes(b"\x00\x05\x16\x07")
    (root / PATHOLOGICAL_LIST).write_text(f"\ufeff{cases[3].name}\nTrainingImg/{cases[4].image.name}\n", encoding="utf-8")
    found = find_cases(root)
    assert [c.name for c in found] == sorted([*(c.name for c in cases if c is not cases[2]), f"{cases[2].name}_0000"])
    assert read_case_list(root / PATHOLOGICAL_LIST, found) == {cases[3].name, cases[4].name}
    assert train(root, tmp_path / "run", "coarse", {**TINY, "epochs": 1, "val_cases": 0}) == 0
    err = capsys.readouterr().err
    assert f"notice: {cases[1].image}: 1 NaN/inf voxels set to" in err and "lesion case(s) x3" in err
    (root / PATHOLOGICAL_LIST).unlink()
    assert train(root, tmp_path / "run2", "coarse", {**TINY, "epochs": 1, "val_cases": 0}) == 0
    assert "no lesion case listed (pathological.txt or --pathological): none sampled more often" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_two_processes_with_torchrun(data, tmp_path, stage):
    """DistributedDataParallel over gloo: two CPU processes train a few steps, rank 0 writes. The
    fine network at 32^3 leaves two pyramid levels of its context block unused (pooled to one voxel)."""
    out = tmp_path / "ddp"
    out.mkdir()
    recipe = {**(TINY if stage == "coarse" else TINY_FINE), "epochs": 1}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "training.train", "--stage", stage, "--data", str(data), "--out", str(out),
                           "--config", str(config_file(tmp_path, recipe)), "--precision", "fp32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 process(es)" in done.stderr and done.stderr.count("epoch 1:") == 1  # rank 0 alone logs
    split_ = json.loads((out / "split.json").read_text())
    examples = len(split_["train"]) + 2 * len(set(split_["train"]) & set(split_["pathological"]))  # lesions x3
    row = (out / "log.csv").read_text().splitlines()[1].split(",")
    assert int(row[1]) == math.ceil(examples / 2) and math.isfinite(float(row[3]))  # one example per process per step
    assert load(out / "best.pt", stages=(stage,)).network(stage) is not None


def test_a_cache_damaged_on_one_machine_alone_stops_every_process_and_says_why(data, tmp_path):
    """Each process with its own --cache (machines without a shared disk): rank 1's copy of a case
    damaged, the run stops with rank 0 printing rank 1's problem (rank 1 prints nothing, and rank
    0 does not die in DistributedDataParallel waiting for it)."""
    launcher = tmp_path / "own_cache.sh"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -m training.train "$@" --cache {tmp_path}/cache$RANK\n')
    launcher.chmod(0o755)
    recipe = config_file(tmp_path, {**TINY, "epochs": 1, "val_cases": 0})

    def two_processes(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "--no-python", str(launcher), "--stage", "coarse", "--data", str(data), "--out", str(out),
                               "--config", str(recipe), "--precision", "fp32", "--workers", "0"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)

    assert two_processes(tmp_path / "first").returncode == 0
    damaged = sorted((tmp_path / "cache1").glob("coarse-*/*.image.npy"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    done = two_processes(tmp_path / "second")
    assert done.returncode != 0
    assert f"error: process 1: {damaged.parent / damaged.name.split('.')[0]}.*: cached files unreadable" in done.stderr
    assert "Connection closed by peer" not in done.stderr


def test_one_out_holds_one_run_at_a_time(tmp_path):
    """A second run started into an --out while a run trains there is refused, not mixed in."""
    from training.train import _training_into
    main_process = SimpleNamespace(main=True)
    with (_training_into(tmp_path, main_process), pytest.raises(DataError, match="another run is training into it"),
          _training_into(tmp_path, main_process)):
        pass
    with _training_into(tmp_path, main_process):  # free again once the first has ended
        pass


def test_a_run_removes_the_half_written_files_of_one_killed_outright(tmp_path):
    """kill -9 (or the kernel's out-of-memory killer) while a checkpoint is written leaves its
    hidden temporary file; the next run into the --out removes it, and nothing else."""
    from training.train import _training_into
    stale = tmp_path / ".resume.pt.4242.0a1b2c3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    kept = [tmp_path / "resume.pt", tmp_path / ".notes.txt"]
    for path in kept:
        path.write_text("kept")
    with _training_into(tmp_path, SimpleNamespace(main=True)):
        assert not stale.exists() and all(path.exists() for path in kept)


def test_a_resumed_run_keeps_its_precision_unless_told_otherwise(data, tmp_path, monkeypatch):
    import training.train as train_module

    asked = []
    real = train_module.choose_training_precision

    def recorded(requested, *args):
        asked.append(requested)
        return real(requested, *args)

    monkeypatch.setattr(train_module, "choose_training_precision", recorded)
    recipe = {**TINY, "epochs": 1, "val_cases": 0}
    assert main(["--stage", "coarse", "--data", str(data), "--out", str(tmp_path / "run"), "--config",
                 str(config_file(tmp_path, recipe)), "--precision", "bf16"]) == 0
    assert main(["--stage", "coarse", "--data", str(data), "--out", str(tmp_path / "run"), "--resume", "--epochs", "2"]) == 0
    assert main(["--stage", "coarse", "--data", str(data), "--out", str(tmp_path / "run"), "--resume", "--epochs", "3",
                 "--precision", "fp32"]) == 0
    assert asked == ["bf16", "bf16", "fp32"]


def test_unused_parameters_are_found_without_computing():
    fine = EfficientSegNet(FineConfig(widths=(4, 8, 8, 16, 16), context_width=8, input_size=(32, 32, 32)))
    assert unused_parameters(fine, (32, 32, 32)) == ["context.pyramid.1.0.weight", "context.pyramid.2.0.weight"]
    assert unused_parameters(fine, (128, 32, 32)) == []  # one side long enough keeps every level
    assert unused_parameters(CoarseUNet(CoarseConfig(widths=(4, 8, 8, 16, 16))), (32, 32, 32)) == []
    assert all(p.device.type == "cpu" for p in fine.parameters())  # the network itself is untouched


def test_a_time_budget_covers_the_whole_run_across_a_resume(data, tmp_path, monkeypatch, capsys):
    """--max-minutes: after BUDGET_PLANNING_STEPS timed steps the run is cut to the steps that fit;
    a run interrupted and resumed keeps that length and the time it has already trained (a clock
    that advances 10 s per step: 60 s fit 6 steps)."""
    import training.train as train_module

    clock = [0.0]
    step = train_module.Trainer.optimiser_step

    def timed_step(self, losses):
        clock[0] += 10.0
        step(self, losses)
        if stop_at[0] is not None and self.state["step"] == stop_at[0]:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(train_module.Trainer, "optimiser_step", timed_step)
    monkeypatch.setattr(train_module, "BUDGET_PLANNING_STEPS", 2)
    # 4 training cases (5 examples with a lesion case x3) in steps of 2: 3 steps an epoch, 30 planned
    budget = {**TINY, "epochs": 10, "val_cases": 0, "max_minutes": 1.0}
    stop_at = [4]  # interrupted in the second epoch, after the first epoch's resume state
    assert train(data, tmp_path / "run", "coarse", budget) == 130
    assert "time budget 1 min: 10.00 s per step, 6 steps in all" in capsys.readouterr().err
    stop_at = [None]
    assert train(data, tmp_path / "run", "coarse", budget, "--resume") == 0
    assert "resuming after epoch 1 (step 3 of 6)" in capsys.readouterr().err
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["1", "3"], ["2", "6"]]
    lrs = [float(row.split(",")[2]) for row in rows[1:]]
    assert lrs[0] == 0.01 and lrs[1] < 0.01  # the step decay fitted to 6 steps, not restarted


def test_a_file_that_breaks_after_an_epoch_keeps_the_checkpoints_and_says_so(data, tmp_path, monkeypatch, capsys):
    """Validation at epoch 2 finds a file gone (removed while training ran): one line naming it,
    exit 2, and epoch 1's checkpoints stay, with how to continue (not "nothing was trained")."""
    import training.train as train_module

    real = train_module.score

    def gone_at_epoch_2(*args, **kwargs):
        if gone_at_epoch_2.calls:
            raise InputError("labels/x.nii.gz: unreadable (FileNotFoundError)")
        gone_at_epoch_2.calls += 1
        return real(*args, **kwargs)

    gone_at_epoch_2.calls = 0
    monkeypatch.setattr(train_module, "score", gone_at_epoch_2)
    assert train(data, tmp_path / "run", "coarse", {**TINY, "val_every": 1}) == 2
    err = capsys.readouterr().err
    assert "error: labels/x.nii.gz: unreadable (FileNotFoundError)" in err
    assert f"checkpoints stay in {tmp_path / 'run'} (continue with --resume once this is put right)" in err
    assert "nothing was trained" not in err and (tmp_path / "run" / "resume.pt").is_file()


def test_a_fold_that_holds_no_case_is_refused(data, tmp_path, capsys):
    """Six cases in 5 folds fill folds 0-4; with 4 cases fold 4 would be empty: a run asking to
    hold it out would silently validate on nothing."""
    few = tmp_path / "few"
    shutil.copytree(data, few)
    for case in find_cases(few)[4:]:
        case.image.unlink()
        case.label.unlink()
    (few / "pathological.txt").unlink()
    assert train(few, tmp_path / "run", "coarse", {**TINY, "fold": 4}) == 2
    assert "fold 4 of 5 holds none of the 4 case(s): choose a fold below 4, or --fold all" in capsys.readouterr().err


def test_a_time_budget_holds_when_steps_are_slow(data, tmp_path, monkeypatch, capsys):
    """--max-minutes 1 with steps of 10 s (a clock advancing so): the run is planned as soon as
    its steps have taken a tenth of the budget, not after BUDGET_PLANNING_STEPS (20) steps,
    which alone would overrun it threefold."""
    import training.train as train_module

    clock = [0.0]
    step = train_module.Trainer.optimiser_step

    def timed_step(self, losses):
        clock[0] += 10.0
        step(self, losses)

    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(train_module.Trainer, "optimiser_step", timed_step)
    assert train(data, tmp_path / "run", "coarse", {**TINY, "epochs": 10, "val_cases": 0, "max_minutes": 1.0}) == 0
    assert "time budget 1 min: 10.00 s per step, 6 steps in all" in capsys.readouterr().err
    assert clock[0] == 60.0


def test_a_run_without_fp16_resumes_where_the_gradient_scaler_is_on(data, tmp_path, monkeypatch):
    """A CPU or fp32 run saves an empty scaler state; resumed on a GPU in fp16 (here: a scaler
    that is on, on the CPU) its scaler starts afresh instead of refusing the resume."""
    import training.train as train_module

    assert train(data, tmp_path / "run", "coarse", {**TINY, "epochs": 1, "val_cases": 0}) == 0
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(train_module.torch.amp, "GradScaler", lambda device, enabled: scaler("cpu", enabled=True))
    assert train(data, tmp_path / "run", "coarse", {**TINY, "epochs": 2, "val_cases": 0}, "--resume") == 0
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 3


def test_a_resume_that_lengthens_the_run_steps_at_the_new_schedule_s_lr(data, tmp_path, monkeypatch):
    """Step decay at 66 % and 86 % of the run: a run of 2 steps resumed as one of 4 takes its 3rd
    step at 0.001 and its 4th at 0.0001, as a 4-step run from the start would (the optimiser still
    held the 2-step schedule's LR for the step after the resume)."""
    import training.train as training_train

    lrs, real_step = [], training_train.Trainer.optimiser_step

    def recording(self, losses):
        lrs.append(self.optimiser.param_groups[0]["lr"])
        return real_step(self, losses)

    monkeypatch.setattr(training_train.Trainer, "optimiser_step", recording)
    run = {**TINY, "epochs": 10, "val_cases": 0}
    assert train(data, tmp_path / "r", "coarse", {**run, "max_steps": 2}) == 0
    assert train(data, tmp_path / "r", "coarse", {**run, "max_steps": 4}, "--resume") == 0
    assert lrs == pytest.approx([0.01, 0.0001, 0.001, 0.0001])  # a 2-step run decays at its 2nd step


def test_fine_validation_leaves_out_a_case_without_organs(data, tmp_path, weights):
    """Without organs there is no box for the fine stage: such a held-out case says nothing of it
    (scored, empty against empty, it would add DSC 1 to every organ)."""
    from training.validation import score

    cases = find_cases(data)[:2]
    empty = tmp_path / "labels" / cases[1].label.name
    empty.parent.mkdir()
    label = nib.load(cases[1].label)
    nib.save(nib.Nifti1Image(np.zeros(label.shape, np.uint8), label.affine, label.header), empty)
    without = dataclasses.replace(cases[1], label=empty)
    models = load(weights)
    assert score(models, "fine", [cases[0], without], torch.device("cpu"), "fp32") == score(
        models, "fine", [cases[0]], torch.device("cpu"), "fp32")


def test_a_resumed_run_keeps_what_it_was_trained_on(data, tmp_path):
    out = tmp_path / "run"
    assert train(data, out, "coarse", {**TINY, "epochs": 1}, "--trained-on", "a set of my own") == 0
    assert train(data, out, "coarse", {**TINY, "epochs": 2}, "--resume") == 0  # not repeated
    assert load(out / "last.pt", stages=("coarse",)).trained_on == "a set of my own"


def test_a_damaged_resume_pt_says_to_start_anew_and_not_to_resume(data, tmp_path, capsys):
    """A resume.pt cut short (a disk that filled, a copy stopped half-way): one line naming it,
    exit 2, and no advice to continue with --resume beside the advice to start a new run."""
    out = tmp_path / "run"
    assert train(data, out, "coarse", {**TINY, "epochs": 1}) == 0
    whole = (out / "resume.pt").read_bytes()
    (out / "resume.pt").write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()
    assert train(data, out, "coarse", {**TINY, "epochs": 2}, "--resume") == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'resume.pt'}: unreadable (" in err and "start a new run into another --out" in err
    assert "continue with --resume" not in err and f"error: 1 problem(s): nothing was trained; {out} stays as it was" in err
