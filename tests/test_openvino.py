"""The CPU's fast path: the networks exported to OpenVINO give the labels eager PyTorch gives, and
are used only when the export matches the checkpoint."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from evaluation.metrics import dice
from inference import openvino_runtime
from inference.checkpoint import load, save
from inference.checkpoint import main as checkpoint_main
from inference.predict import main as predict_main
from tests.test_predict import synthetic_ct

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not openvino_runtime.installed(), reason="OpenVINO is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, weights):
    """The tiny test weights with their OpenVINO export beside them."""
    folder = tmp_path_factory.mktemp("exported")
    path = shutil.copy(weights, folder / "tiny.pt")
    assert checkpoint_main(["export-openvino", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    for seed in range(2):
        synthetic_ct(folder, f"case{seed}_0000.nii.gz", seed=seed)
    return folder


def test_openvino_labels_agree_with_eager_pytorch(tmp_path, exported, scans, capsys):
    assert openvino_runtime.available(exported, load(exported)) is None
    for backend in ("torch", "openvino"):
        assert predict_main(["-i", str(scans), "-o", str(tmp_path / backend), "--weights", str(exported),
                             "--backend", backend, "--report", str(tmp_path / f"{backend}.json")]) == 0
        assert json.loads((tmp_path / f"{backend}.json").read_text())["backend"] == backend
    for case in ("case0.nii.gz", "case1.nii.gz"):
        eager, compiled = (np.asarray(nib.load(tmp_path / b / case).dataobj) for b in ("torch", "openvino"))
        assert eager.any()
        for label in range(1, 5):
            if (eager == label).sum() > 50:
                assert dice(compiled == label, eager == label) >= 0.99, (case, label)


def test_auto_uses_the_export_only_when_it_was_made_from_this_checkpoint(tmp_path, exported, scans, capsys):
    report = tmp_path / "r.json"
    assert predict_main(["-i", str(scans), "-o", str(tmp_path / "a"), "--weights", str(exported),
                         "--report", str(report)]) == 0
    assert json.loads(report.read_text())["backend"] == "openvino"
    changed = tmp_path / "tiny.pt"  # another checkpoint under the export of the first
    models = load(exported)
    models.trained_on = "something else"
    save(changed, models)
    shutil.copytree(openvino_runtime.folder_for(exported), openvino_runtime.folder_for(changed))
    capsys.readouterr()
    assert predict_main(["-i", str(scans), "-o", str(tmp_path / "b"), "--weights", str(changed),
                         "--report", str(report)]) == 0
    assert json.loads(report.read_text())["backend"] == "torch"
    assert "exported from another checkpoint" in capsys.readouterr().err


def test_openvino_asked_for_without_an_export_is_a_usage_error(tmp_path, weights, scans, capsys):
    code = predict_main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(weights),
                         "--backend", "openvino"])
    err = capsys.readouterr().err
    assert code == 2 and "--backend openvino: no OpenVINO export of" in err and "export-openvino" in err
    assert not list((tmp_path / "out").iterdir())


def test_openvino_writes_nothing_outside_the_outputs(tmp_path, exported, scans):
    """OpenVINO's usage telemetry (files under ~/intel, data sent over the network) stays off."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "inference.predict", "-i", str(scans), "-o", str(tmp_path / "out"),
                           "--weights", str(exported), "--backend", "openvino"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list(home.iterdir())


def test_compiling_ahead_gives_the_networks_compile_networks_uses(tmp_path, exported, weights):
    assert openvino_runtime.compile_ahead(weights) is None  # no export beside it: nothing to start
    ahead = openvino_runtime.compile_ahead(exported)
    compiled = openvino_runtime.compile_networks(exported, load(exported), ahead)
    assert compiled == ahead.result() and set(compiled) == {"coarse", "fine"}
