"""The submission end to end on the CPU: predict CLI, predict.sh, outputs, bad inputs, the Dockerfile."""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from flare_common.errors import InputError
from inference.checkpoint import random_models, save
from inference.predict import main
from training.phantom import HU_STORED, case_seed, centred, generate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blind_weights(tmp_path_factory, tiny_networks) -> Path:
    """Networks whose coarse stage never finds an organ (all logits 0)."""
    path = tmp_path_factory.mktemp("weights") / "blind.pt"
    models = random_models(**tiny_networks)
    torch.nn.init.zeros_(models.coarse.head.weight)
    save(path, models)
    return path


def synthetic_ct(folder: Path, name: str, shape=(64, 56, 24), spacing=(4.0, 4.0, 8.0), seed=0) -> Path:
    """A phantom CT (int16 HU, RAS affine) of shape (x, y, z) and spacing (mm) centred on the abdomen."""
    phantom = generate(case_seed(seed, 0), geometry=centred(shape, spacing))
    path = folder / name
    hu = np.clip(np.rint(phantom.image), *HU_STORED).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, phantom.geometry.affine), str(path))
    return path


def run(inputs: Path, outputs: Path, weights: Path, *extra: str) -> int:
    return main(["-i", str(inputs), "-o", str(outputs), "--weights", str(weights), *extra])


def assert_same_grid(output: Path, source: Path):
    """The output on the source's grid with its geometry, and a label map's header: none of what
    described the CT's values or the scan."""
    out, src = nib.load(output), nib.load(source)
    assert out.shape == src.shape
    np.testing.assert_array_equal(out.affine, src.affine)
    assert out.get_data_dtype() == np.uint8
    for key in ("qform_code", "sform_code", "pixdim", "dim", "xyzt_units", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(out.header[key], src.header[key], err_msg=key)
    assert (out.header["cal_min"], out.header["cal_max"], out.header.get_intent()[0]) == (0, 0, "label")
    assert out.header["descrip"] == b"" and out.header["aux_file"] == b"" and not out.header.extensions
    values = np.unique(np.asarray(out.dataobj))
    assert set(values.tolist()) <= {0, 1, 2, 3, 4}


def test_a_label_map_keeps_the_cts_geometry_and_nothing_that_described_the_scan(tmp_path, weights):
    """A CT whose header holds a display window, an intent, the patient's name (descrip, aux_file,
    an extension) and both forms with their codes: its label map keeps the geometry only."""
    ct = nib.load(synthetic_ct(tmp_path, "named_0000.nii.gz"))
    header = ct.header.copy()
    header["descrip"], header["aux_file"] = b"PatientName=Doe^Jane", b"scanner.txt"
    header["cal_min"], header["cal_max"] = -160, 240
    header.set_intent("estimate", name="HU")
    header.set_xyzt_units("mm", "sec")
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientName=Doe^Jane"))
    named = nib.Nifti1Image(np.asarray(ct.dataobj), ct.affine, header=header)
    named.set_qform(ct.affine, code=1)
    named.set_sform(ct.affine, code=2)
    nib.save(named, str(tmp_path / "named_0000.nii.gz"))
    assert run(tmp_path / "named_0000.nii.gz", tmp_path / "out", weights) == 0
    assert_same_grid(tmp_path / "out" / "named.nii.gz", tmp_path / "named_0000.nii.gz")
    assert b"Doe" not in gzip.decompress((tmp_path / "out" / "named.nii.gz").read_bytes())


def test_synthetic_and_real_cases(tmp_path, weights, real_ct, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    synthetic_ct(inputs, "synth_001_0000.nii.gz")
    shutil.copy(real_ct / "ts_abdomen_0000.nii.gz", inputs)
    (inputs / "notes.txt").write_text("not an image")
    assert run(inputs, outputs, weights, "--report", str(tmp_path / "report" / "r.json")) == 0
    assert sorted(p.name for p in outputs.iterdir()) == ["synth_001.nii.gz", "ts_abdomen.nii.gz"]
    assert_same_grid(outputs / "ts_abdomen.nii.gz", inputs / "ts_abdomen_0000.nii.gz")
    assert_same_grid(outputs / "synth_001.nii.gz", inputs / "synth_001_0000.nii.gz")
    assert np.asarray(nib.load(outputs / "ts_abdomen.nii.gz").dataobj).any()
    report = json.loads((tmp_path / "report" / "r.json").read_text())
    assert report["device_type"] == "cpu" and report["precision"] == "fp32" and report["failed"] == 0
    assert set(report["startup_s"]) == {"process", "loading"}
    for case in report["cases"]:
        stages = {"waited", "coarse", "components", "crop", "fine", "logits back", "paste", "write"}
        assert set(case["seconds"]) == stages | {"read", "reorient", "total"}  # read ahead, beside other work
        assert sum(case["seconds"][k] for k in stages) <= case["seconds"]["total"] + 1e-6  # parts of the whole
        assert all(case["seconds"][k] >= 0 for k in case["seconds"])
        assert not any("peak" in key for key in case)  # GPU memory only where measured, never zeros
    captured = capsys.readouterr()
    assert captured.out.count("->") == 2  # one summary line per case
    assert "notes.txt" in captured.err and "untrained" in captured.err


def _variant(img: nib.Nifti1Image, flip: tuple[int, ...], order: tuple[int, int, int]) -> nib.Nifti1Image:
    """The same scan stored differently: axes flipped and permuted, affine adjusted to match."""
    data, affine = np.asarray(img.dataobj), img.affine.copy()
    for axis in flip:
        data = np.flip(data, axis)
        affine = affine @ _flip_matrix(axis, img.shape[axis])
    data = np.transpose(data, order)
    perm = np.eye(4)[:, list(order) + [3]]
    return nib.Nifti1Image(np.ascontiguousarray(data), affine @ perm)


def _flip_matrix(axis: int, n: int) -> np.ndarray:
    m = np.eye(4)
    m[axis, axis], m[axis, 3] = -1, n - 1
    return m


def test_same_labels_whatever_the_storage_orientation(tmp_path, weights, real_ct):
    """Flipped and permuted copies of one scan give the same labels once mapped to canonical."""
    original = nib.load(real_ct / "ts_abdomen_0000.nii.gz")
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    variants = {"as_stored": ((), (0, 1, 2)), "flipped": ((0, 2), (0, 1, 2)), "permuted": ((), (2, 0, 1)),
                "both": ((1,), (1, 2, 0))}
    for name, (flip, order) in variants.items():
        nib.save(_variant(original, flip, order), str(inputs / f"{name}_0000.nii.gz"))
    assert run(inputs, outputs, weights) == 0
    canonical = {name: nib.as_closest_canonical(nib.load(outputs / f"{name}.nii.gz")).get_fdata()
                 for name in variants}
    assert canonical["as_stored"].any()
    for name in variants:
        np.testing.assert_array_equal(canonical[name], canonical["as_stored"], err_msg=name)
        assert_same_grid(outputs / f"{name}.nii.gz", inputs / f"{name}_0000.nii.gz")


def test_bad_inputs_fail_alone(tmp_path, weights, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    good = synthetic_ct(inputs, "good_0000.nii.gz")
    (inputs / "corrupt_0000.nii.gz").write_bytes(b"\x1f\x8b\x08 broken")
    nib.save(nib.Nifti1Image(np.zeros(32, np.int16), np.eye(4)), str(inputs / "flat_0000.nii.gz"))  # a line
    nib.save(nib.Nifti1Image(np.asarray(nib.load(good).dataobj)[:, :, 8], nib.load(good).affine),
             str(inputs / "slice_0000.nii.gz"))  # 2D: one slice
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 16, 2), np.int16), np.eye(4)), str(inputs / "series_0000.nii.gz"))
    img = nib.load(good)
    data = np.asarray(img.dataobj).astype(np.float32)
    data[0, 0, :] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(inputs / "nan_0000.nii.gz"))  # float storage with NaN
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., None], img.affine), str(inputs / "single_0000.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., None, None], img.affine), str(inputs / "five_0000.nii.gz"))
    assert run(inputs, outputs, weights) == 1
    written = sorted(p.name for p in outputs.iterdir())
    assert written == ["five.nii.gz", "good.nii.gz", "nan.nii.gz", "single.nii.gz", "slice.nii.gz"]  # nothing partial
    assert nib.load(outputs / "single.nii.gz").shape == img.shape + (1,)
    assert nib.load(outputs / "slice.nii.gz").shape == img.shape[:2]
    assert nib.load(outputs / "five.nii.gz").shape == img.shape + (1, 1)  # one volume, more axes of length 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and all(re.match(r"error: (corrupt|flat|series)_0000\.nii\.gz: ", e) for e in errors)
    assert "warning: nan_0000.nii.gz:" in err and "5 of 8 case(s) written" in err


def test_coarse_stage_finding_nothing_gives_an_empty_mask(tmp_path, blind_weights, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    synthetic_ct(inputs, "case_0000.nii.gz")
    assert run(inputs, outputs, blind_weights) == 0
    assert not np.asarray(nib.load(outputs / "case.nii.gz").dataobj).any()
    assert "found no organ" in capsys.readouterr().err


def test_fp16_on_the_cpu_is_a_usage_error(tmp_path, weights, capsys):
    """Path problems are tested in test_predict_cli.py; this one needs torch to be found."""
    synthetic_ct(tmp_path, "case_0000.nii.gz")
    assert run(tmp_path, tmp_path / "out", weights, "--device", "cpu", "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: fp16 needs a CUDA device; use bf16 or fp32 on the CPU"]
    assert not list((tmp_path / "out").iterdir())


def test_bf16_on_the_cpu_runs(tmp_path, weights):
    inputs = tmp_path / "in"
    inputs.mkdir()
    synthetic_ct(inputs, "case_0000.nii.gz")
    assert run(inputs, tmp_path / "out", weights, "--precision", "bf16", "--device", "cpu") == 0
    assert_same_grid(tmp_path / "out" / "case.nii.gz", inputs / "case_0000.nii.gz")


def test_full_size_networks_on_the_real_ct(tmp_path, real_ct):
    """The paper's sizes (160^3 coarse, 192^3 fine) end to end, untrained, on the CPU."""
    weights = tmp_path / "paper.pt"
    save(weights, random_models())
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(real_ct / "ts_abdomen_0000.nii.gz", inputs)
    assert run(inputs, tmp_path / "out", weights) == 0
    assert_same_grid(tmp_path / "out" / "ts_abdomen.nii.gz", inputs / "ts_abdomen_0000.nii.gz")


def test_predict_sh(tmp_path, weights):
    inputs = tmp_path / "in"
    inputs.mkdir()
    synthetic_ct(inputs, "case_0000.nii.gz")
    script = (ROOT / "predict.sh").read_text()
    assert "CUDA_VISIBLE_DEVICES" not in script
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["sh", str(ROOT / "predict.sh"), "in", "out", "--weights", str(weights), "--report", "r.json"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)  # paths relative to the caller
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "case.nii.gz").is_file()
    assert json.loads((tmp_path / "r.json").read_text())["heap"] == "kept"  # PyTorch on the CPU: freed memory reused
    assert done.stdout.startswith("case_0000.nii.gz -> case.nii.gz")  # piped output flushed before the quick exit
    assert done.stderr.rstrip().endswith("1 of 1 case(s) written to out")
    again = subprocess.run(["sh", str(ROOT / "predict.sh"), "in", "--continue", "--weights", str(weights), "-o", "out"],
                           env=env, capture_output=True, text=True, cwd=tmp_path)  # options right after INPUTS
    assert again.returncode == 0 and "1 case(s) already written to out" in again.stderr, again.stderr
    version = subprocess.run(["sh", str(ROOT / "predict.sh"), "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("python -m inference.predict "), version.stderr


def test_predict_sh_help_shows_its_own_usage_and_the_options(tmp_path):
    """`sh predict.sh --help` names the script's own arguments, then the options it passes on;
    nothing is read or written."""
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["sh", str(ROOT / "predict.sh"), "--help"], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: sh predict.sh [INPUTS [OUTPUTS]] [OPTIONS]")
    assert "--weights" in done.stdout and "--device" in done.stdout
    assert not any(tmp_path.iterdir())


def test_hadolint_finds_no_errors():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, "--failure-threshold", "error", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


class _BrightIsLiver(torch.nn.Module):
    """A stand-in network with known behaviour: liver wherever the normalised CT is above 1."""

    def __init__(self, input_size):
        super().__init__()
        self.config = type("Config", (), {"input_size": input_size})()

    def forward(self, x):
        others = torch.full_like(x, -10.0).expand(-1, 3, -1, -1, -1)
        return torch.cat([x - 1.0, others], dim=1)


@pytest.mark.parametrize("flip,order", [((), (0, 1, 2)), ((0, 2), (2, 0, 1)), ((1,), (1, 2, 0))])
def test_pipeline_geometry_recovers_a_known_organ(tmp_path, flip, order):
    """With a network of known behaviour, the coarse stage, crop, fine stage, resampling back,
    pasting and reorientation must put the organ exactly where it is, in any storage order."""
    from evaluation.metrics import dice
    from inference.checkpoint import Models
    from inference.imageio import read_ct
    from inference.pipeline import Segmenter
    from inference.torch_runtime import TorchNetworks

    shape, spacing = (90, 80, 40), (1.5, 1.5, 3.0)
    x, y, z = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    organ = ((x - 60) / 25) ** 2 + ((y - 50) / 20) ** 2 + ((z - 70) / 30) ** 2 <= 1  # off-centre
    hu = np.where(organ, 300, -300).astype(np.int16)
    stored = _variant(nib.Nifti1Image(hu, np.diag([*spacing, 1.0])), flip, order)
    nib.save(stored, str(tmp_path / "ct.nii.gz"))
    truth = np.asarray(_variant(nib.Nifti1Image(organ.astype(np.uint8), np.diag([*spacing, 1.0])), flip, order).dataobj)

    models = Models(_BrightIsLiver((32, 32, 32)), _BrightIsLiver((48, 48, 48)), trained_on="test")
    ct = read_ct(tmp_path / "ct.nii.gz")
    result = Segmenter(models.spec(), TorchNetworks(models, torch.device("cpu"), "fp32"))(ct.data, ct.spacing)
    labels = ct.from_canonical(result.labels)
    assert labels.shape == truth.shape
    assert dice(labels == 1, truth == 1) > 0.97
    assert set(np.unique(labels)) == {0, 1}


def test_image_in_labels_out_api_matches_predict_and_leaves_the_models_alone(tmp_path, weights):
    """Segmenter.segment(nibabel image) gives what predict writes; the Models given to a Segmenter
    (e.g. networks still being trained) are neither moved, cast, nor switched to eval mode."""
    from inference.checkpoint import load
    from inference.pipeline import Segmenter
    from inference.torch_runtime import TorchNetworks

    inputs = tmp_path / "in"
    inputs.mkdir()
    source = synthetic_ct(inputs, "case_0000.nii.gz")
    assert run(inputs, tmp_path / "out", weights) == 0
    models = load(weights)
    models.fine.train()
    before = {k: v.clone() for k, v in models.fine.state_dict().items()}
    image, result = Segmenter(models.spec(), TorchNetworks(models, torch.device("cpu"), "bf16")).segment(nib.load(source))
    assert models.fine.training and all(torch.equal(v, before[k]) for k, v in models.fine.state_dict().items())
    assert next(models.fine.parameters()).dtype == torch.float32
    image, result = Segmenter(models.spec(), TorchNetworks(models, torch.device("cpu"), "fp32")).segment(nib.load(source))
    written = nib.load(tmp_path / "out" / "case.nii.gz")
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(written.dataobj))
    np.testing.assert_array_equal(image.affine, written.affine)
    assert image.get_data_dtype() == np.uint8 and result.box is not None


def test_the_array_and_image_apis_refuse_what_they_cannot_segment_before_any_work(weights):
    """One line each, before a network runs: not 3D, a spacing that is not three positive numbers,
    NaN voxels (an array is the caller's: a file's are set to air on reading), and an image
    whose header cannot describe labels (not NIfTI)."""
    from inference.checkpoint import load
    from inference.pipeline import Segmenter
    from inference.torch_runtime import TorchNetworks

    models = load(weights)
    segmenter = Segmenter(models.spec(), TorchNetworks(models, torch.device("cpu"), "fp32"))
    ct = np.full((16, 16, 8), -1000.0, np.float32)
    for volume, spacing, message in ((ct[0], (1.0, 1.0), "3D array"), (ct, (0.0, 0.8, 2.5), "three positive"),
                                     (ct, (0.8, 2.5), "three positive"), (ct, (-0.8, 0.8, 2.5), "three positive")):
        with pytest.raises(ValueError, match=message):
            segmenter(volume, spacing)
    with_nan = ct.copy()
    with_nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        segmenter(with_nan, (0.8, 0.8, 2.5))
    with pytest.raises(InputError, match="a NIfTI image is needed, not a MGHImage"):
        segmenter.segment(nib.MGHImage(ct, np.eye(4)))


@pytest.mark.parametrize("edge_padding", [True, False])
def test_a_crop_at_the_scans_edge_continues_past_it_only_where_an_organ_is_cut(edge_padding):
    """An organ cut by the top of the scan: the fine stage's crop goes on past that edge by the
    margin (repeating the top slice) and nowhere else, and the labels still cover the organ up to
    the edge, on the CT's own grid; with edge_padding off the crop ends at the scan."""
    from evaluation.metrics import dice
    from inference.checkpoint import Models
    from inference.pipeline import Segmenter
    from inference.postprocessing import Postprocessing
    from inference.torch_runtime import TorchNetworks

    shape, spacing = (60, 50, 30), (2.0, 2.0, 4.0)
    x, y, z = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    organ = ((x - 60) / 30) ** 2 + ((y - 50) / 25) ** 2 + ((z - 120) / 40) ** 2 <= 1  # cut at z = 116 mm
    hu = np.where(organ, 300.0, -300.0).astype(np.float32)
    models = Models(_BrightIsLiver((32, 32, 32)), _BrightIsLiver((48, 48, 48)), trained_on="test",
                    post=Postprocessing(edge_padding=edge_padding))
    result = Segmenter(models.spec(), TorchNetworks(models, torch.device("cpu"), "fp32"))(hu, spacing)
    assert result.padding == (((0, 0), (0, 0), (0, 5)) if edge_padding else ((0, 0),) * 3)  # 20 mm at 4 mm
    assert result.box[2].stop == shape[2] and result.labels.shape == shape
    assert dice(result.labels == 1, organ) > 0.97 and (result.labels[:, :, -1] == 1).sum() > 0.9 * organ[:, :, -1].sum()


def test_values_that_are_not_hounsfield_units_are_segmented_with_a_warning(tmp_path, weights, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    img = nib.load(synthetic_ct(inputs, "hu_0000.nii.gz"))
    raw = (np.asarray(img.dataobj).astype(np.int32) + 1024).clip(0, None).astype(np.uint16)  # the intercept lost
    nib.save(nib.Nifti1Image(raw, img.affine), str(inputs / "raw_0000.nii.gz"))
    assert run(inputs, tmp_path / "out", weights) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hu.nii.gz", "raw.nii.gz"]
    warned = [line for line in capsys.readouterr().err.splitlines() if "not Hounsfield units" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: raw_0000.nii.gz: no voxel below -500 HU")
