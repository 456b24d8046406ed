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
import torch

from evaluation.metrics import dice
from inference import openvino_runtime
from inference.checkpoint import load, save
from inference.checkpoint import main as checkpoint_main
from inference.pipeline import Segmenter
from inference.predict import main as predict_main
from inference.torch_runtime import TorchNetworks
from tests.test_predict import synthetic_ct
from tests.test_weights import UNSEEN_SEED
from tests.test_weights import WEIGHTS as SHIPPED
from training import phantom

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
    assert openvino_runtime.read_export(exported) == (load(exported).spec(), None)  # all the pipeline needs
    for backend in ("torch", "openvino"):
        assert predict_main(["-i", str(scans), "-o", str(tmp_path / backend), "--weights", str(exported),
                             "--backend", backend, "--precision", "fp32", "--report", str(tmp_path / f"{backend}.json")]) == 0
        report = json.loads((tmp_path / f"{backend}.json").read_text())
        assert (report["backend"], report["precision"], report["precision_probe_s"]) == (backend, "fp32", {})
        assert (report["torch"] is None) == (backend == "openvino")
    for case in ("case0.nii.gz", "case1.nii.gz"):
        eager, compiled = (np.asarray(nib.load(tmp_path / b / case).dataobj) for b in ("torch", "openvino"))
        assert eager.any()
        for label in range(1, 5):
            if (eager == label).sum() > 50:
                assert dice(compiled == label, eager == label) >= 0.99, (case, label)


def test_the_shipped_weights_give_eager_fp32_labels_in_both_precisions(tmp_path):
    """Trained weights (the tiny test ones have too little margin for bf16's rounding): OpenVINO
    in fp32 and in bf16 against eager PyTorch fp32 on an unseen phantom, the issue's bar of DSC
    >= 0.99 per organ (measured: >= 0.998 on six test phantoms, docs/benchmarks.md)."""
    weights = Path(shutil.copy(SHIPPED, tmp_path / SHIPPED.name))
    models = load(weights)
    openvino_runtime.export(weights, models)
    case = phantom.generate(phantom.case_seed(UNSEEN_SEED, 1), max_side=160)
    expected = Segmenter(models.spec(), TorchNetworks(models, "cpu", "fp32"))(case.image, case.spacing).labels
    for precision in ("fp32", "bf16"):
        networks = openvino_runtime.compile_networks(weights, models.stages(), precision)
        labels = Segmenter(models.spec(), networks)(case.image, case.spacing).labels
        for label in phantom.LABELS:
            assert (expected == label).sum() > 1000
            assert dice(labels == label, expected == label) >= 0.99, (precision, label)


class FakeCore:
    """OpenVINO's Core as choose_precision asks it: the CPU's capabilities."""

    def __init__(self, capabilities):
        self.capabilities = capabilities

    def get_property(self, device, name):
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        return self.capabilities


@pytest.mark.parametrize("capabilities, probe_s, chosen", [
    (["FP32", "INT8"], None, "fp32"),  # no bf16 instructions: never bf16, and no probe
    (["BF16", "FP32"], {"fp32": 0.030, "bf16": 0.018}, "bf16"),  # 1.67x faster
    (["BF16", "FP32"], {"fp32": 0.030, "bf16": 0.026}, "fp32"),  # 1.15x: not worth the rounding
    (["BF16", "FP32"], {"fp32": 0.020, "bf16": 0.028}, "fp32"),  # slower in bf16 (a CPU without AMX seen so)
])
def test_auto_precision_takes_bf16_only_where_the_cpu_has_it_and_the_probe_finds_it_faster(
        monkeypatch, capabilities, probe_s, chosen):
    monkeypatch.setattr(openvino_runtime, "probe", lambda core: probe_s)
    assert openvino_runtime.choose_precision("auto", FakeCore(capabilities)) == (chosen, probe_s or {})
    bf16 = "bf16" if "BF16" in capabilities else "fp32"  # OpenVINO would ignore a bf16 hint: say fp32
    for asked, ran in (("fp32", "fp32"), ("bf16", bf16)):  # asked for: nothing measured
        assert openvino_runtime.choose_precision(asked, FakeCore(capabilities)) == (ran, {})


def test_the_probe_times_both_precisions():
    seconds = openvino_runtime.probe(openvino_runtime._openvino().Core())
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 60 for s in seconds.values())


def test_auto_precision_reports_what_the_networks_ran_in(tmp_path, exported, scans, capsys):
    report = tmp_path / "r.json"
    assert predict_main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(exported),
                         "--report", str(report)]) == 0
    ran = json.loads(report.read_text())
    assert ran["backend"] == "openvino" and ran["precision"] in ("fp32", "bf16")
    assert f"networks run by OpenVINO on the CPU in {ran['precision']}" in capsys.readouterr().err  # always said
    if ran["precision_probe_s"]:  # probed: the choice follows the rule
        fp32, bf16 = ran["precision_probe_s"]["fp32"], ran["precision_probe_s"]["bf16"]
        assert ran["precision"] == ("bf16" if fp32 >= openvino_runtime.BF16_SPEED_UP * bf16 else "fp32")


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
    notices = [line for line in capsys.readouterr().err.splitlines() if "networks run by" in line]
    assert len(notices) == 1 and notices[0].startswith("notice: networks run by PyTorch on the CPU in fp32: ")
    assert "exported from another checkpoint" in notices[0]  # one line: what runs them, and why not the export
    assert predict_main(["-i", str(scans), "-o", str(tmp_path / "c"), "--weights", str(exported),
                         "--backend", "torch"]) == 0
    assert "notice: networks run by PyTorch on the CPU in fp32\n" in capsys.readouterr().err  # asked for: no reason


@pytest.mark.parametrize("cuda", [False, True])
def test_a_gpu_machine_whose_gpus_this_process_may_not_use_still_runs_the_export(tmp_path, exported, scans, monkeypatch,
                                                                                 cuda):
    """An NVIDIA driver's device file (a GPU host; CUDA_VISIBLE_DEVICES="" or flare-efficiency --gpu
    none): OpenVINO runs the networks unless PyTorch finds a CUDA GPU after all."""
    import inference.predict as predict

    real_exists = os.path.exists
    monkeypatch.setattr(predict.os.path, "exists", lambda p: p == "/dev/nvidiactl" or real_exists(p))
    monkeypatch.setattr(predict, "_cuda_available", lambda: cuda)
    if cuda:  # no GPU here to run on: stop where PyTorch would take over
        def pytorch_takes_over(args, fallback):
            raise SystemExit(f"torch {fallback}")  # no export tried: no reason to give

        monkeypatch.setattr(predict, "_torch_networks", pytorch_takes_over)
        with pytest.raises(SystemExit, match="torch None"):
            predict_main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(exported)])
        return
    report = tmp_path / "r.json"
    assert predict_main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(exported),
                         "--report", str(report)]) == 0
    assert json.loads(report.read_text())["backend"] == "openvino"


def test_a_damaged_export_falls_back_to_pytorch_or_is_a_usage_error(tmp_path, exported, scans, capsys):
    """A truncated .bin passes the manifest's checks but does not compile: auto runs PyTorch and
    says why, --backend openvino ends with one line (exit 2); no traceback, nothing half-written."""
    damaged = Path(shutil.copy(exported, tmp_path / "damaged.pt"))
    shutil.copytree(openvino_runtime.folder_for(exported), openvino_runtime.folder_for(damaged))
    with open(openvino_runtime.folder_for(damaged) / "fine.bin", "r+b") as f:
        f.truncate(100)
    report = tmp_path / "r.json"
    capsys.readouterr()
    assert predict_main(["-i", str(scans), "-o", str(tmp_path / "a"), "--weights", str(damaged),
                         "--report", str(report)]) == 0
    assert json.loads(report.read_text())["backend"] == "torch"
    assert "does not compile" in capsys.readouterr().err
    assert predict_main(["-i", str(scans), "-o", str(tmp_path / "b"), "--weights", str(damaged),
                         "--backend", "openvino"]) == 2
    err = capsys.readouterr().err
    assert "--backend openvino: its export beside damaged.pt does not compile" in err and "Traceback" not in err
    assert "Exception from src/" not in err  # OpenVINO's reason (its last line), not the source files it passed
    assert not list((tmp_path / "b").iterdir())


def test_openvino_asked_for_without_an_export_is_a_usage_error(tmp_path, weights, scans, capsys):
    code = predict_main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(weights),
                         "--backend", "openvino"])
    err = capsys.readouterr().err
    assert code == 2 and "--backend openvino: no OpenVINO export of" in err and "export-openvino" in err
    assert not list((tmp_path / "out").iterdir())


def test_openvino_writes_nothing_outside_the_outputs_and_never_imports_torch(tmp_path, exported, scans):
    """OpenVINO's usage telemetry (files under ~/intel, data sent over the network) stays off; the
    export holds all the pipeline needs, so the run never pays for importing torch."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    run = ("import sys; from inference.predict import main; code = main(sys.argv[1:]); "
           "print('torch' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", run, "-i", str(scans), "-o", str(tmp_path / "out"),
                           "--weights", str(exported), "--backend", "openvino"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False" and len(list((tmp_path / "out").iterdir())) == 2
    assert not list(home.iterdir())


def test_compiling_ahead_gives_the_networks_compile_networks_uses(tmp_path, exported, weights):
    assert openvino_runtime.compile_ahead(weights, "fp32") is None  # no export beside it: nothing to start
    ahead = openvino_runtime.compile_ahead(exported, "bf16")
    networks = openvino_runtime.compile_networks(exported, ["coarse", "fine"], "bf16", ahead)
    assert networks is ahead.result() and set(networks.stages) == {"coarse", "fine"}
    assert (networks.precision, networks.probe_s) == (openvino_runtime.choose_precision("bf16")[0], {})


def test_each_call_returns_logits_of_its_own_that_match_eager_pytorch(exported):
    """The compiled network writes into an array it hands over: a later call (and the working
    memory it gives back) leaves an earlier result as it was."""
    models = load(exported)
    networks = openvino_runtime.compile_networks(exported, models.stages(), "fp32")
    net = models.network("coarse")
    inputs = [np.random.default_rng(s).standard_normal(net.config.input_size, dtype=np.float32) for s in (0, 1)]
    first = networks("coarse", inputs[0])
    kept = first.copy()
    second = networks("coarse", inputs[1])
    assert np.array_equal(first, kept) and not np.array_equal(first, second)
    with torch.no_grad():
        for x, logits in zip(inputs, (first, second)):
            np.testing.assert_allclose(logits, net(torch.from_numpy(x)[None, None])[0].numpy(), rtol=1e-3, atol=1e-3)


def test_an_export_is_used_only_with_the_pipelines_whole_spec(tmp_path, exported):
    """The manifest carries what the pipeline needs (the run never loads the checkpoint): an export
    without it (an older version's) or without a network is not used, and says why."""
    weights = Path(shutil.copy(exported, tmp_path / "w.pt"))
    shutil.copytree(openvino_runtime.folder_for(exported), openvino_runtime.folder_for(weights))
    path = openvino_runtime.folder_for(weights) / openvino_runtime.MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["spec"]["input_sizes"]["fine"]
    path.write_text(json.dumps(manifest))
    assert openvino_runtime.read_export(weights) == (None, "w.openvino holds no fine network (exported from a stage checkpoint)")
    del manifest["spec"]
    path.write_text(json.dumps(manifest))
    spec, problem = openvino_runtime.read_export(weights)
    assert spec is None and "older version" in problem
