"""The efficiency harness: per-case figures from samples, the sampler, fake submissions end to end."""
import json
import math
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import psutil
import pytest

from evaluation.efficiency import Submission, main
from evaluation.rules import get_rules
from evaluation.sampler import Sampler
from evaluation.usage import OFFICIAL_COLUMNS, area, case_figures, plain_max, set_verdict, stable_max

FAKES = Path(__file__).resolve().parent / "fakes"


def test_stable_max_is_the_largest_value_seen_in_more_than_2_percent():
    values = [1000] * 90 + [3000] * 8 + [9000] * 2  # the 2 % spike does not count, 8 % does
    assert stable_max(values) == 3000 and plain_max(values) == 9000
    assert stable_max([500.4, 499.6, 500.2] * 10) == 500  # compared as whole MB
    assert math.isnan(stable_max([])) and math.isnan(stable_max([math.nan]))


def test_area_uses_real_sample_times_and_the_allowance():
    t = [0.0, 0.1, 0.25, 0.4]
    v = [1000, 3000, 3000, 500]
    # each sample lasts until the next one; the last until the end of the run (0.5 s)
    assert area(t, v, end_s=0.5) == pytest.approx(1000 * 0.1 + 3000 * 0.15 + 3000 * 0.15 + 500 * 0.1)
    assert area(t, v, end_s=0.5, free=2048) == pytest.approx((3000 - 2048) * 0.3)
    assert math.isnan(area(t, [math.nan] * 4, end_s=0.5))
    # the organisers' count x 0.1 s equals this only when samples really are 0.1 s apart
    assert area([0.0, 0.1, 0.2], [10, 10, 10], end_s=0.3) == pytest.approx(3 * 10 * 0.1)


def _samples(n=50, gpu=True):
    t = np.arange(n) * 0.1
    return pd.DataFrame({"t_s": t, "gpu_used_mb": np.full(n, 3000.0) if gpu else np.nan, "gpu_tree_mb": np.nan,
                         "cpu_used_pct": np.full(n, 50.0), "cpu_tree_pct": np.full(n, 90.0),
                         "ram_used_mb": np.full(n, 8000.0), "ram_tree_mb": np.full(n, 1500.0)})


def test_case_figures_follow_each_years_rules():
    samples = _samples()
    f21 = case_figures("a.nii.gz", samples, 5.0, "ok", "", get_rules("flare21").efficiency)
    f22 = case_figures("a.nii.gz", samples, 5.0, "ok", "", get_rules("flare22").efficiency)
    assert f21["AUC_GPU_Time"] == pytest.approx(3000 * 5.0)
    assert f22["AUC_GPU_Time"] == pytest.approx((3000 - 2048) * 5.0)  # FLARE22: 2 GB are free
    assert f21["AUC_CPU_Time"] == pytest.approx(50 * 5.0) and f21["MaxRAM"] == 8000
    assert f21["MaxCPU_Tree"] == 90 and f21["Samples"] == 50
    stuck = case_figures("a.nii.gz", samples, 3.0, "timeout", "", get_rules("flare22").efficiency)
    assert (stuck["Time"], stuck["AUC_GPU_Time"], stuck["AUC_CPU_Time"]) == (3600, 3600 * (10240 - 2048), 360000)
    no_gpu = case_figures("a.nii.gz", _samples(gpu=False), 5.0, "ok", "", get_rules("flare21").efficiency)
    assert math.isnan(no_gpu["MaxGPU_Mem"]) and math.isnan(no_gpu["AUC_GPU_Time"])  # NaN, never 0


def test_set_verdict():
    rows = [case_figures(f"{i}.nii.gz", _samples(), 200.0, "ok", "", get_rules("flare21").efficiency)
            for i in range(3)]
    verdict = set_verdict(pd.DataFrame(rows), get_rules("flare21").efficiency)
    assert verdict["passed"] is True  # 100 x 200 s = 5.6 h <= 6 h; 3000 MB <= 10 GB
    rows[0]["Time"] = 1000.0
    rows[1]["Status"] = "crashed"
    verdict = set_verdict(pd.DataFrame(rows), get_rules("flare21").efficiency)
    assert verdict["passed"] is False
    assert [c["passed"] for c in verdict["checks"]] == [False, True, False]


class FakeGpu:
    """A GPU whose used memory follows a known series, one value per call."""

    def __init__(self, series):
        self.series, self.calls = list(series), 0

    def used_mb(self):
        value = self.series[min(self.calls, len(self.series) - 1)]
        self.calls += 1
        return value

    def process_used_mb(self, pids):
        return 123.0


def test_sampler_records_real_times_and_the_fake_gpu():
    sampler = Sampler(FakeGpu([1000, 2000, 4000, 4000, 1500]), interval_s=0.05).start()
    time.sleep(0.4)
    samples = pd.DataFrame(sampler.stop())
    assert len(samples) >= 5
    assert samples["gpu_used_mb"].tolist()[:5] == [1000, 2000, 4000, 4000, 1500]
    intervals = np.diff(samples["t_s"])
    assert np.all(intervals > 0) and abs(np.median(intervals) - 0.05) < 0.02
    assert samples["ram_used_mb"].gt(0).all() and samples["cpu_used_pct"].between(0, 100).all()
    assert samples["gpu_tree_mb"].isna().all()  # no process attached


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """One harness run over cases that behave as their names say."""
    root = tmp_path_factory.mktemp("efficiency")
    inputs = root / "inputs"
    inputs.mkdir()
    for mode in ("normal", "slow", "hang", "crash", "nothing", "wrongshape", "memory"):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), str(inputs / f"{mode}_0000.nii.gz"))
    command = f"FAKE_PIDS={root / 'pids.txt'} {sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    code = main(["--inputs", str(inputs), "--out", str(root / "out"), "--command", command, "--timeout", "4",
                 "--interval", "0.05", "--rules", "flare21"])
    table = pd.read_csv(root / "out" / "efficiency.csv").set_index("Name")
    return code, table, root


def test_fake_submissions_are_recorded_and_the_run_goes_on(fake_run):
    code, table, root = fake_run
    assert code == 1
    assert list(table.reset_index().columns[:8]) == OFFICIAL_COLUMNS
    assert table["Status"].to_dict() == {
        "normal.nii.gz": "ok", "slow.nii.gz": "ok", "hang.nii.gz": "timeout", "crash.nii.gz": "crashed",
        "nothing.nii.gz": "no-output", "wrongshape.nii.gz": "no-output", "memory.nii.gz": "ok"}
    assert table.loc["slow.nii.gz", "Time"] >= 1.5 > table.loc["normal.nii.gz", "Time"]
    assert 4 <= table.loc["hang.nii.gz", "Time"] < 15
    assert "exit code 3" in table.loc["crash.nii.gz", "Detail"]
    assert "shape" in table.loc["wrongshape.nii.gz", "Detail"]
    assert table.loc["memory.nii.gz", "MaxRAM_Tree"] >= 300 > table.loc["normal.nii.gz", "MaxRAM_Tree"]
    assert table["MaxGPU_Mem"].isna().all()  # no GPU here: NaN, not 0
    assert sorted(p.name for p in (root / "out" / "predictions").iterdir()) == [
        "memory.nii.gz", "normal.nii.gz", "slow.nii.gz"]
    samples = pd.read_csv(root / "out" / "samples" / "slow.csv")
    assert len(samples) >= 20 and samples["t_s"].is_monotonic_increasing
    summary = json.loads((root / "out" / "efficiency.json").read_text())
    assert summary["not_ok"] == 4 and summary["verdict"]["passed"] is False


def test_a_hanging_case_is_killed_with_its_whole_tree(fake_run):
    _, _, root = fake_run
    log = (root / "out" / "logs" / "hang.log").read_text()
    assert "Traceback" not in log
    pids = [int(p) for p in (root / "pids.txt").read_text().split()]
    assert len(pids) == 2  # the submission and the child it started
    for pid in pids:  # both are gone (or reaped zombies)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_docker_command_has_the_safe_defaults(tmp_path):
    argv = Submission(image="team:latest", gpu=2, docker_args=("--shm-size=28gb",)).argv(
        tmp_path / "in", tmp_path / "out", "flare-eval-abc")
    text = " ".join(argv)
    assert argv[:3] == ["docker", "container", "run"] and "--gpus device=2" in text
    assert "--network none" in text and "--memory 28g" in text and "--rm" in argv and "--shm-size=28gb" in argv
    assert "--security-opt no-new-privileges" in text
    assert f"{(tmp_path / 'in').resolve()}/:/workspace/inputs/:ro" in argv
    assert argv[-4:] == ["team:latest", "/bin/bash", "-c", "sh predict.sh"]
    assert "CUDA_VISIBLE_DEVICES" not in text


def test_image_mode_through_a_fake_docker(tmp_path, monkeypatch):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), str(inputs / "normal_0000.nii.gz"))
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES / 'docker.py'} \"$@\"\n")
    docker.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--image", "team:latest",
                 "--docker", str(docker), "--gpu", "1"]) == 0
    calls = [json.loads(line) for line in (tmp_path / "docker.log").read_text().splitlines()]
    run = next(c for c in calls if c[:2] == ["container", "run"])
    name = run[run.index("--name") + 1]
    assert name.startswith("flare-eval-") and "--network" in run and "device=1" in run
    assert pd.read_csv(tmp_path / "out" / "efficiency.csv")["Status"].tolist() == ["ok"]


def test_usage_errors(tmp_path, capsys):
    for argv in (["--inputs", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--command", "x {inputs} {outputs}"],
                 ["--inputs", str(tmp_path), "--out", str(tmp_path / "o"), "--command", "no placeholders"],
                 ["--inputs", str(tmp_path), "--out", str(tmp_path / "o"), "--command", "x {inputs} {outputs}"],
                 ["--inputs", str(tmp_path), "--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "no .nii.gz" in capsys.readouterr().err
