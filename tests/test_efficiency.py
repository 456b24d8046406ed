"""The efficiency harness: per-case figures from samples, the sampler, fake submissions end to end."""
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import psutil
import pytest

from evaluation.baseline import Baseline, busy_reasons, measure
from evaluation.efficiency import Submission, build_parser, choose_gpu, gpu_choice, main
from evaluation.rules import get_rules
from evaluation.sampler import ProcessTree, Sampler, needs_final_sample
from evaluation.usage import OFFICIAL_COLUMNS, area, case_figures, plain_max, set_verdict, stable_max
from flare_common.nifti import MISCASED

FAKES = Path(__file__).resolve().parent / "fakes"


def test_stable_max_is_the_largest_value_seen_in_more_than_2_percent():
    values = [1000] * 90 + [3000] * 8 + [9000] * 2  # the 2 % spike does not count, 8 % does
    assert stable_max(values) == 3000 and plain_max(values) == 9000
    assert stable_max([500.4, 499.6, 500.2] * 10) == 500  # compared as whole MB
    assert math.isnan(stable_max([])) and math.isnan(stable_max([math.nan]))


def test_areas_are_the_organisers_sum_x_step_by_default_and_real_time_on_request():
    t = [0.13, 0.26, 0.39, 0.45]  # late samples, and a case ending 0.06 s after the last full interval
    v = [1000, 3000, 3000, 500]
    # official (flare-rules: "sum of samples x 0.1 s"): the count of samples, whatever their times
    assert area(t, v, end_s=0.5) == pytest.approx((1000 + 3000 + 3000 + 500) * 0.1)
    assert area(t, v, end_s=0.5, free=2048) == pytest.approx((3000 - 2048) * 2 * 0.1)
    # real time: each sample stands for the interval that ends at it (the first from 0), the last
    # also until the end
    assert area(t, v, end_s=0.5, step_s=None) == pytest.approx(
        1000 * 0.13 + 3000 * 0.13 + 3000 * 0.13 + 500 * (0.06 + 0.05))
    for step in (0.1, None):
        assert math.isnan(area(t, [math.nan] * 4, end_s=0.5, step_s=step))
    # both agree where the samples really are 0.1 s apart, read at each interval's end, to the end
    assert area([0.1, 0.2, 0.3], [10, 10, 10], end_s=0.3, step_s=None) == pytest.approx(area([0.1, 0.2, 0.3],
                                                                                             [10, 10, 10], end_s=0.3))


def _samples(n=50, gpu=True):
    t = np.arange(1, n + 1) * 0.1  # read at the end of each interval, as the sampler does
    return pd.DataFrame({"t_s": t, "gpu_used_mb": np.full(n, 3000.0) if gpu else np.nan, "gpu_tree_mb": np.nan,
                         "cpu_used_pct": np.full(n, 50.0), "cpu_tree_pct": np.full(n, 90.0),
                         "ram_used_mb": np.full(n, 8000.0), "ram_tree_mb": np.full(n, 1500.0)})


def test_the_official_columns_are_rounded_as_the_organisers_csv_rounds_them():
    """Time and the CPU figures to 2 decimals, the GPU maximum and the GPU and RAM areas to whole
    numbers (np.round: ties to even); MeasuredTime keeps the wall time."""
    samples = _samples(n=3).assign(gpu_used_mb=[3000.4, 3000.4, 3000.4], cpu_used_pct=[33.3333, 33.3333, 12.0],
                                   ram_used_mb=[8000.123, 8000.123, 8000.123])
    row = case_figures("a.nii.gz", samples, 0.30449, "ok", "", get_rules("flare23").efficiency)
    assert (row["Time"], row["MeasuredTime"]) == (0.3, 0.30449)
    assert (row["MaxGPU_Mem"], row["AUC_GPU_Time"]) == (3000.0, 900.0)  # 3 x 3000.4 x 0.1 = 900.12
    assert (row["MaxCPU_Utilization"], row["AUC_CPU_Time"]) == (33.33, 7.87)
    assert (row["MaxRAM"], row["AUC_RAM_Time"]) == (8000.12, 2400.0)


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
    assert stuck["Penalised"] and stuck["MeasuredTime"] == 3.0
    no_gpu = case_figures("a.nii.gz", _samples(gpu=False), 5.0, "ok", "", get_rules("flare21").efficiency)
    assert math.isnan(no_gpu["MaxGPU_Mem"]) and math.isnan(no_gpu["AUC_GPU_Time"])  # NaN, never 0


@pytest.mark.parametrize("status", ["crashed", "no-output", "timeout"])
def test_every_failed_case_gets_the_years_stuck_values_when_penalised(status):
    flare22 = get_rules("flare22").efficiency
    failed = case_figures("a.nii.gz", _samples(5), 0.3, status, "", flare22, policy="penalised")
    assert failed["Penalised"] and failed["Time"] == 3600 and failed["AUC_CPU_Time"] == 360000
    official = case_figures("a.nii.gz", _samples(5), 0.3, status, "", flare22)  # the organisers' way, the default
    assert official["Penalised"] is (status == "timeout")
    assert official["Time"] == (3600 if status == "timeout" else 0.3)
    for year in ("flare21", "flare23"):  # no stuck values: the measured ones stand (rank puts the case last)
        row = case_figures("a.nii.gz", _samples(5), 0.3, status, "", get_rules(year).efficiency, policy="penalised")
        assert not row["Penalised"] and row["Time"] == 0.3


def test_set_verdict():
    rows = [case_figures(f"{i}.nii.gz", _samples(), 200.0, "ok", "", get_rules("flare21").efficiency)
            for i in range(3)]
    verdict = set_verdict(pd.DataFrame(rows), get_rules("flare21").efficiency)
    assert verdict["passed"] is True  # 100 x 200 s = 5.6 h <= 6 h; 3000 MB <= 10 GB
    rows[0]["Time"] = rows[0]["MeasuredTime"] = 1000.0
    rows[1]["Status"] = "crashed"
    verdict = set_verdict(pd.DataFrame(rows), get_rules("flare21").efficiency)
    assert verdict["passed"] is False
    # time; GPU system-wide (3000 MB: passed) and process tree (not measured here); valid outputs
    assert [c["passed"] for c in verdict["checks"]] == [False, True, None, False]
    assert [c["source"] for c in verdict["checks"]][1:3] == ["system-wide (official)", "process tree"]


def test_gpu_memory_without_a_stable_level_is_still_checked_against_the_limit():
    """FLARE21's stable maximum is NaN when memory keeps rising (no level in 2 % of the samples):
    the 10 GB check then uses the plain maximum, not "not measured"."""
    rising = _samples(n=200).assign(gpu_used_mb=np.linspace(11000.0, 15000.0, 200))
    rules = get_rules("flare21").efficiency
    row = case_figures("a.nii.gz", rising, 20.0, "ok", "", rules)
    assert math.isnan(row["MaxGPU_Mem"]) and row["PlainMaxGPU_Mem"] == 15000
    gpu = set_verdict(pd.DataFrame([row]), rules)["checks"][1]
    assert gpu["source"] == "system-wide (official)" and gpu["passed"] is False and gpu["value"] == "15000 MB"


def test_verdict_on_the_process_tree_as_well_as_system_wide():
    """A 62 MB submission on a machine whose other jobs use 30 GB fails the official RAM check only."""
    flare22 = get_rules("flare22").efficiency
    samples = _samples().assign(ram_used_mb=30000.0, ram_tree_mb=62.0)
    table = pd.DataFrame([case_figures("a.nii.gz", samples, 5.0, "ok", "", flare22)])
    verdict = set_verdict(table, flare22)
    ram = {c["source"]: c for c in verdict["checks"] if c["limit"].startswith("RAM")}
    assert ram["system-wide (official)"]["passed"] is False and ram["process tree"]["passed"] is True
    assert verdict["passed"] is False and verdict["passed_process_tree"] is True


def test_the_set_time_is_projected_from_measured_times_not_penalties():
    flare22 = get_rules("flare22").efficiency
    rows = [case_figures("a.nii.gz", _samples(), 10.0, "ok", "", flare22),
            case_figures("b.nii.gz", _samples(), 0.5, "crashed", "", flare22, policy="penalised")]
    time_check = set_verdict(pd.DataFrame(rows), flare22)["checks"][0]
    assert rows[1]["Time"] == 3600 and time_check["passed"] is True  # 50 x 5.25 s, not 50 x 1805 s


def test_the_set_time_counts_only_the_cases_with_a_time():
    """A case the harness failed on has no time: the projection is from the others, and with no
    time at all the check is not measured (not failed)."""
    rules = get_rules("flare21").efficiency
    timed = case_figures("a.nii.gz", _samples(), 10.0, "ok", "", rules)
    untimed = case_figures("b.nii.gz", _samples(), math.nan, "error", "", rules)
    check = set_verdict(pd.DataFrame([timed, untimed]), rules)["checks"][0]
    assert check["passed"] is True and check["value"].endswith("projected from 1 case(s)")
    check = set_verdict(pd.DataFrame([untimed]), rules)["checks"][0]
    assert check["passed"] is None and check["value"] == "not measured"


class FakeGpu:
    """A GPU whose used memory follows a known series, one value per call."""

    name = "fake GPU"
    index = 0
    uuid = ""

    def __init__(self, series):
        self.series, self.calls = list(series), 0

    def used_mb(self):
        value = self.series[min(self.calls, len(self.series) - 1)]
        self.calls += 1
        return value

    def process_used_mb(self, pids):
        return 123.0

    def process_count(self):
        return 0


def test_sampler_records_real_times_and_the_fake_gpu():
    sampler = Sampler(FakeGpu([1000, 2000, 4000, 4000, 1500]), interval_s=0.05).start()
    time.sleep(0.4)
    samples = pd.DataFrame(sampler.stop())
    assert len(samples) >= 5
    assert samples["gpu_used_mb"].tolist()[:5] == [1000, 2000, 4000, 4000, 1500]
    intervals = np.diff(samples["t_s"])
    assert np.all(intervals > 0) and abs(np.median(intervals) - 0.05) < 0.02
    assert samples["t_s"].iloc[0] >= 0.045  # the first sample's CPU figures cover a whole interval, not a few ticks
    assert samples["ram_used_mb"].gt(0).all() and samples["cpu_used_pct"].between(0, 100).all()
    assert samples["gpu_tree_mb"].isna().all()  # no process attached


def test_tree_figures_are_nan_once_the_process_has_ended_and_cpu_is_capped():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    tree = ProcessTree(proc.pid)
    pids, ram, cpu = tree.sample()
    assert pids == [proc.pid] and ram > 0
    proc.kill()
    proc.wait()  # reaped: gone
    assert tree.sample()[0] == [] and all(math.isnan(v) for v in tree.sample()[1:])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    tree = ProcessTree(zombie.pid)
    deadline = time.monotonic() + 60
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    _, ram, cpu = tree.sample()  # ended, not yet reaped: its memory would read 0
    assert math.isnan(ram) and math.isnan(cpu)
    zombie.wait()
    runaway = FakeProcess()  # reports a whole CPU second more at every reading
    tree = ProcessTree(os.getpid(), lambda: [runaway])
    assert tree.sample()[2] == 0  # first seen (born long ago): nothing counted yet
    for _ in range(3):
        time.sleep(0.05)
        assert tree.sample()[2] == 100 * psutil.cpu_count()  # 1 s per 0.05 s would read 2000 %


class FakeProcess:
    """A live process whose CPU time grows by one second at every reading."""

    pid, seconds = 999_999, 0.0

    def oneshot(self):
        return contextlib.nullcontext()

    def status(self):
        return psutil.STATUS_RUNNING

    def cpu_times(self):
        self.seconds += 1.0
        return SimpleNamespace(user=self.seconds, system=0.0)

    def memory_info(self):
        return SimpleNamespace(rss=2**20)

    def create_time(self):
        return 0.0


def test_busy_machine_reasons():
    assert busy_reasons(Baseline(3.0, 2000.0, 600.0, 0, 1.0)) == []
    reasons = busy_reasons(Baseline(97.0, 9000.0, 5000.0, 2, 1.0))
    assert "CPU 97 %" in reasons[0] and "2 process(es) computing on the GPU" in reasons[1]
    assert busy_reasons(Baseline(97.0, 9000.0, math.nan, None, 1.0), cpu_threshold_pct=99) == []
    watched = measure(FakeGpu([700.0]), seconds=0.3, interval_s=0.05)
    assert watched.ram_mb > 0 and watched.gpu_mb == 700.0 and 0 <= watched.cpu_pct <= 100
    assert watched.gpu_processes == 0 and watched.seconds >= 0.3


def _cases(folder: Path, modes) -> Path:
    folder.mkdir()
    for mode in modes:
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), str(folder / f"{mode}_0000.nii.gz"))
    return folder


def _gone(pid: int) -> bool:
    """The process has ended (or is an ended child not yet reaped)."""
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """One harness run over cases that behave as their names say. The timeout is far above what
    any case needs even on a loaded machine: timeouts are tested apart (hang_run)."""
    root = tmp_path_factory.mktemp("efficiency")
    inputs = _cases(root / "inputs", ("normal", "slow", "crash", "nothing", "wrongshape", "memory", "daemon", "child"))
    command = (f"FAKE_PIDS={root / 'daemon.pid'} FAKE_TIMES={root / 'times.txt'} {sys.executable} "
               f"{FAKES / 'submission.py'} {{inputs}} {{outputs}}")
    code = main(["--inputs", str(inputs), "--out", str(root / "out"), "--command", command, "--timeout", "300",
                 "--interval", "0.05", "--rules", "flare21", "--baseline", "0.2"])
    table = pd.read_csv(root / "out" / "efficiency.csv").set_index("Name")
    return code, table, root


def test_fake_submissions_are_recorded_and_the_run_goes_on(fake_run):
    code, table, root = fake_run
    assert code == 1
    assert list(table.reset_index().columns[:8]) == OFFICIAL_COLUMNS
    assert table["Status"].to_dict() == {
        "normal.nii.gz": "ok", "slow.nii.gz": "ok", "crash.nii.gz": "crashed", "nothing.nii.gz": "no-output",
        "wrongshape.nii.gz": "no-output", "memory.nii.gz": "ok", "daemon.nii.gz": "ok", "child.nii.gz": "ok"}
    own_times = dict(line.split() for line in (root / "times.txt").read_text().splitlines())
    for mode, seconds in own_times.items():  # the harness's Time covers the whole run of the process
        assert table.loc[f"{mode}.nii.gz", "Time"] >= float(seconds)
    assert table.loc["slow.nii.gz", "Time"] >= 1.5
    assert "exit code 3" in table.loc["crash.nii.gz", "Detail"]
    assert "shape" in table.loc["wrongshape.nii.gz", "Detail"]
    assert table.loc["memory.nii.gz", "MaxRAM_Tree"] >= 300 > table.loc["normal.nii.gz", "MaxRAM_Tree"]
    assert table["MaxRAM_Tree"].ne(0).all()  # NaN where no sample caught it, never a 0 read after it ended
    assert table["MaxCPU_Tree"].le(100 * psutil.cpu_count()).all()
    assert table["MaxGPU_Mem"].isna().all()  # no GPU here: NaN, not 0
    assert not table["Penalised"].any()  # FLARE21 has no stuck values
    assert table["BaselineRAM_MB"].gt(0).all() and table["Machine"].str.match("idle|busy: ").all()
    assert sorted(p.name for p in (root / "out" / "predictions").iterdir()) == [
        "child.nii.gz", "daemon.nii.gz", "memory.nii.gz", "normal.nii.gz", "slow.nii.gz"]
    samples = pd.read_csv(root / "out" / "samples" / "slow.csv")
    assert len(samples) >= 20 and samples["t_s"].is_monotonic_increasing
    summary = json.loads((root / "out" / "efficiency.json").read_text())
    assert summary["not_ok"] == 3 and summary["verdict"]["passed"] is False and summary["failures"] == "official"


def test_a_double_forked_daemon_is_killed_when_the_case_ends(fake_run):
    _, table, root = fake_run
    daemon = int((root / "daemon.pid").read_text())
    assert _gone(daemon)
    assert "1 process(es) still running at the exit were killed" in table.loc["daemon.nii.gz", "Detail"]
    assert table.loc["daemon.nii.gz", "Status"] == "ok"


def test_a_child_left_in_the_process_group_is_killed_and_counted(fake_run):
    """The case's process group is killed at once when its process exits; what was still running
    in it is counted all the same (the submission left it behind)."""
    _, table, root = fake_run
    child = int((root / "daemon.pid.child").read_text())
    assert _gone(child)
    assert "1 process(es) still running at the exit were killed" in table.loc["child.nii.gz", "Detail"]
    assert table.loc["child.nii.gz", "Status"] == "ok"


@pytest.fixture(scope="module")
def hang_run(tmp_path_factory):
    """A case that never ends (a shell script: running within milliseconds even under load), with
    a child and a double-forked daemon, killed at a 3 s timeout; the FLARE22 rules."""
    root = tmp_path_factory.mktemp("hang")
    inputs = _cases(root / "inputs", ("hang",))
    command = f"FAKE_PIDS={root / 'pids.txt'} /bin/sh {FAKES / 'hang.sh'} {{inputs}} {{outputs}}"
    code = main(["--inputs", str(inputs), "--out", str(root / "out"), "--command", command, "--timeout", "3",
                 "--interval", "0.05", "--rules", "flare22", "--baseline", "0"])
    return code, pd.read_csv(root / "out" / "efficiency.csv").set_index("Name"), root


def test_a_hanging_case_is_killed_with_everything_it_started(hang_run):
    code, table, root = hang_run
    assert code == 1
    row = table.loc["hang.nii.gz"]
    assert row["Status"] == "timeout" and 3 <= row["MeasuredTime"] < 3 + 60  # killed at once, even under load
    assert row["Time"] == 3600 and row["Penalised"]  # FLARE22's stuck value
    assert row["Machine"] == "not checked"  # --baseline 0
    assert "Traceback" not in (root / "out" / "logs" / "hang.log").read_text()
    pids = [int(p) for p in (root / "pids.txt").read_text().split()]
    assert len(pids) == 3  # the script, its child and the double-forked daemon
    assert all(_gone(pid) for pid in pids)


def test_docker_command_is_the_organisers_by_default_and_isolated_on_request(tmp_path):
    """The organisers' `docker container run` with the year's options (FLARE23: --shm-size=28gb -m
    28G) by default; --isolated adds no network, read-only inputs and no new privileges."""
    flare23 = get_rules("flare23").efficiency.docker_args
    argv = Submission(image="team:latest", gpu=2, docker_args=flare23).argv(tmp_path / "in", tmp_path / "out",
                                                                             "flare-eval-abc")
    text = " ".join(argv)
    assert argv[:3] == ["docker", "container", "run"] and "--gpus device=2" in text and "--rm" in argv
    assert "--shm-size=28gb -m 28G" in text and "--network" not in argv and "--security-opt" not in argv
    assert f"{(tmp_path / 'in').resolve()}/:/workspace/inputs/" in argv  # writable, as theirs
    assert argv[-4:] == ["team:latest", "/bin/bash", "-c", "sh predict.sh"]
    assert "CUDA_VISIBLE_DEVICES" not in text
    isolated = " ".join(Submission(image="team:latest", gpu=2, memory="12g", isolated=True, docker_args=flare23).argv(
        tmp_path / "in", tmp_path / "out", "flare-eval-abc"))
    assert "--network none" in isolated and "--security-opt no-new-privileges" in isolated
    assert f"{(tmp_path / 'in').resolve()}/:/workspace/inputs/:ro" in isolated
    assert isolated.index("-m 28G") < isolated.index("--memory 12g")  # the one asked for comes last and wins


def test_a_local_command_keeps_the_shells_own_braces(tmp_path):
    """Only {inputs} and {outputs} are placeholders: ${VAR:-x}, awk programs and shell functions
    reach the shell as written, and the folders are quoted."""
    command = 'f() { cat; }; ls {inputs} | awk \'{print $1}\' > "${TMPDIR:-/tmp}/x"; sh predict.sh {inputs} {outputs}'
    argv = Submission(command=command).argv(tmp_path / "in put", tmp_path / "out", "unused")
    assert argv[:2] == ["/bin/sh", "-c"]
    expected = command.replace("{inputs}", f"'{tmp_path / 'in put'}'").replace("{outputs}", str(tmp_path / "out"))
    assert argv[2] == expected and "{print $1}" in argv[2] and "${TMPDIR:-/tmp}" in argv[2]


@pytest.mark.parametrize("gpu_args,caller,nvml,seen", [
    (["--gpu", "1"], "0", True, "GPU-fake-1|"),  # the sampled card by its UUID, whatever CUDA's order
    (["--gpu", "1"], "0", False, "1|PCI_BUS_ID"),  # no NVML: nvidia-smi's index, CUDA told to count as it does
    (["--gpu", "none"], "0", True, "|"),  # no GPU, as a container without --gpus
    ([], "GPU-fake-3", True, "GPU-fake-3|"),  # auto: the GPU the caller chose, sampled
    ([], "2", True, "GPU-fake-2|"),
    ([], None, True, "GPU-fake-0|"),
    ([], "0", False, "0|"),  # auto without NVML: the caller's environment as it is
])
def test_a_local_command_sees_only_the_sampled_gpu(tmp_path, monkeypatch, gpu_args, caller, nvml, seen):
    inputs = _cases(tmp_path / "inputs", ("normal",))
    seen_file = tmp_path / "seen.txt"

    def open_gpu(index=0, quiet=False, uuid=None):
        if not nvml:
            return None
        gpu = FakeGpu([1000.0])
        gpu.index = int(uuid.removeprefix("GPU-fake-")) if uuid else index
        gpu.uuid = f"GPU-fake-{gpu.index}"
        return gpu

    monkeypatch.setattr("evaluation.efficiency.GpuMemory.open", open_gpu)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    if caller is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", caller)
    command = (f'printf "%s|%s" "$CUDA_VISIBLE_DEVICES" "$CUDA_DEVICE_ORDER" > {seen_file}; {sys.executable} '
               f"{FAKES / 'submission.py'} {{inputs}} {{outputs}}")
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", command, "--baseline", "0",
                 *gpu_args]) == 0
    assert seen_file.read_text() == seen
    assert Submission(image="team:latest", cuda_visible="GPU-x").env() is None  # docker's --gpus chooses for a container


def test_docker_command_without_a_gpu_has_no_gpus_option(tmp_path):
    """The CPU mode (--gpu none): a daemon without NVIDIA's runtime refuses any --gpus."""
    argv = Submission(image="team:latest", gpu=None).argv(tmp_path / "in", tmp_path / "out", "flare-eval-abc")
    assert not [a for a in argv if a.startswith("--gpus") or a.startswith("device=")]
    assert argv[:5] == ["docker", "container", "run", "--name", "flare-eval-abc"]
    assert argv[-4:] == ["team:latest", "/bin/bash", "-c", "sh predict.sh"]


def test_gpu_option_takes_an_index_auto_or_none(capsys):
    assert (gpu_choice("auto"), gpu_choice("none"), gpu_choice("3")) == ("auto", "none", 3)
    parser = build_parser()
    assert parser.parse_args(["--inputs", "i", "--out", "o", "--image", "x"]).gpu == "auto"
    for bad in ("-1", "cuda:0", "all", ""):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["--inputs", "i", "--out", "o", "--image", "x", "--gpu", bad])
        assert exc.value.code == 2
    assert "auto or none" in capsys.readouterr().err


def test_auto_takes_gpu_0_when_nvml_sees_it_else_none_with_a_notice(capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    seen = []

    def nvml(index, quiet=False):
        seen.append((index, quiet))
        return FakeGpu([1000.0])

    index, gpu = choose_gpu("auto", nvml)
    assert index == 0 and isinstance(gpu, FakeGpu) and seen == [(0, True)]
    assert capsys.readouterr().err == ""
    assert choose_gpu("auto", lambda index, quiet=False: None) == (None, None)
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and notice[0].startswith("notice: no GPU visible") and "--gpu none" in notice[0]
    assert choose_gpu("none", lambda *a, **k: pytest.fail("NVML opened under --gpu none")) == (None, None)
    assert choose_gpu(2, nvml)[0] == 2 and seen[-1] == (2, False)  # an index named: used as given


@pytest.mark.parametrize("gpu_args,nvml_sees_a_gpu,expected", [
    (["--gpu", "none"], True, None),
    ([], False, None),  # auto without a GPU: the CPU mode
    ([], True, "device=0"),
    (["--gpu", "1"], False, "device=1"),
])
def test_gpus_option_given_to_docker(tmp_path, monkeypatch, gpu_args, nvml_sees_a_gpu, expected):
    inputs = _cases(tmp_path / "inputs", ("normal",))
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES / 'docker.py'} \"$@\"\n")
    docker.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    monkeypatch.setattr("evaluation.efficiency.GpuMemory.open",
                        lambda index=0, quiet=False, uuid=None: FakeGpu([1000.0]) if nvml_sees_a_gpu else None)
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--image", "team:latest", "--docker",
                 str(docker), "--baseline", "0", *gpu_args]) == 0
    calls = [json.loads(line) for line in (tmp_path / "docker.log").read_text().splitlines()]
    run = next(c for c in calls if c[:2] == ["container", "run"])
    gpus = run[run.index("--gpus") + 1] if "--gpus" in run else None
    assert gpus == expected
    summary = json.loads((tmp_path / "out" / "efficiency.json").read_text())
    assert summary["gpu_index"] == (None if expected is None else int(expected[-1]))


def test_image_mode_through_a_fake_docker(tmp_path, monkeypatch):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), str(inputs / "normal_0000.nii.gz"))
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES / 'docker.py'} \"$@\"\n")
    docker.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--image", "team:latest",
                 "--docker", str(docker), "--gpu", "1", "--isolated"]) == 0
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


@pytest.mark.parametrize("option", ["--timeout", "--baseline", "--interval", "--busy-cpu"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_numbers_that_are_not_finite_are_refused(tmp_path, capsys, option, value):
    """--timeout nan would switch the timeout off, --baseline inf wait for ever: usage errors."""
    inputs = _cases(tmp_path / "inputs", ("a",))
    with pytest.raises(SystemExit) as exc:
        main(["--inputs", str(inputs), "--out", str(tmp_path / "o"), "--command", "x {inputs} {outputs}", option, value])
    assert exc.value.code == 2
    assert f"{option}: {value!r}: expected a finite number" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--interval", "0.001", "--interval must be at least 0.01 s"),
    ("--busy-cpu", "-5", "--busy-cpu is a percentage"), ("--busy-cpu", "101", "--busy-cpu is a percentage")])
def test_numbers_out_of_their_range_are_refused(tmp_path, capsys, option, value, message):
    inputs = _cases(tmp_path / "inputs", ("a",))
    with pytest.raises(SystemExit) as exc:
        main(["--inputs", str(inputs), "--out", str(tmp_path / "o"), "--command", "x {inputs} {outputs}", option, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_inputs_in_the_folder_the_predictions_go_to_are_refused(tmp_path, capsys):
    """The run replaces the files of OUT/predictions: inputs there would be removed."""
    (tmp_path / "out").mkdir()
    inputs = _cases(tmp_path / "out" / "predictions", ("a",))
    with pytest.raises(SystemExit) as exc:
        main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", "x {inputs} {outputs}"])
    assert exc.value.code == 2 and "the run writes its predictions there" in capsys.readouterr().err
    assert (inputs / "a_0000.nii.gz").is_file()


def test_folders_named_like_a_placeholder_are_passed_as_they_are(tmp_path):
    """A path holding "{outputs}" is the path, not a place for the outputs folder."""
    inputs = _cases(tmp_path / "in{outputs}puts", ("normal",))
    command = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "o{outputs}"), "--command", command,
                 "--baseline", "0"]) == 0  # the case's folders are made in --out
    assert (tmp_path / "o{outputs}" / "predictions" / "normal.nii.gz").is_file()


def test_an_input_that_cannot_be_read_is_named_and_the_others_run(tmp_path, capsys):
    inputs = _cases(tmp_path / "inputs", ("normal",))
    (inputs / "broken_0000.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    command = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", command, "--baseline", "0"]) == 1
    table = pd.read_csv(tmp_path / "out" / "efficiency.csv").set_index("Name")
    assert table["Status"].to_dict() == {"broken.nii.gz": "error", "normal.nii.gz": "ok"}
    assert table.loc["broken.nii.gz", "Detail"].startswith("input broken_0000.nii.gz could not be read (")
    assert "broken.nii.gz: error, time n/a, GPU n/a, RAM n/a (input broken_0000.nii.gz" in capsys.readouterr().out


def test_a_full_disk_while_an_output_is_kept_fails_that_case_and_leaves_no_folder(tmp_path, monkeypatch):
    import evaluation.efficiency as efficiency

    real = shutil.copy2

    def disk_full_for_a(source, target):
        if Path(target).parent.name == "predictions" and Path(target).name == "a.nii.gz":
            raise OSError(28, "No space left on device")
        return real(source, target)

    monkeypatch.setattr(efficiency.shutil, "copy2", disk_full_for_a)
    inputs = _cases(tmp_path / "inputs", ("a", "b"))
    command = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", command, "--baseline", "0"]) == 1
    table = pd.read_csv(tmp_path / "out" / "efficiency.csv").set_index("Name")
    assert table["Status"].to_dict() == {"a.nii.gz": "error", "b.nii.gz": "ok"}
    assert "No space left on device" in table.loc["a.nii.gz", "Detail"]
    assert not list((tmp_path / "out").glob(".work-*"))


def test_a_hung_docker_kill_still_ends_the_case_at_its_timeout(tmp_path, monkeypatch):
    """`docker kill` that never returns: the case's own processes are killed all the same and the
    case is a timeout, not an error of the harness."""
    import evaluation.efficiency as efficiency

    inputs = _cases(tmp_path / "inputs", ("hang",))
    docker = tmp_path / "docker"
    docker.write_text('#!/bin/sh\ncase "$1" in container) exec sleep 1000;; kill) exec sleep 1000;; esac\n')
    docker.chmod(0o755)
    monkeypatch.setattr(efficiency, "DOCKER_KILL_S", 1.0)
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--image", "team:latest", "--docker",
                 str(docker), "--gpu", "none", "--timeout", "2", "--baseline", "0"]) == 1
    row = pd.read_csv(tmp_path / "out" / "efficiency.csv").iloc[0]
    assert row["Status"] == "timeout" and row["Detail"].startswith("killed after 2 s")


def test_inputs_named_in_upper_case_are_named_as_not_run(tmp_path, capsys):
    """B_0000.NII.GZ is no case (the organisers match lower-case names): the run says so."""
    inputs = _cases(tmp_path / "inputs", ("a",))
    (inputs / "B_0000.NII.GZ").write_bytes((inputs / "a_0000.nii.gz").read_bytes())
    main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", "false {inputs} {outputs}",
          "--baseline", "0", "--gpu", "none"])
    assert f"notice: --inputs {inputs}: B_0000.NII.GZ: {MISCASED}" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "out" / "efficiency.csv")["Name"].tolist() == ["a.nii.gz"]


def test_an_output_under_another_name_is_named_in_the_detail(tmp_path):
    """A submission writing <case>.nii (not .nii.gz) has no output, and the row says what it wrote."""
    inputs = _cases(tmp_path / "inputs", ("a",))
    script = tmp_path / "write_nii.py"
    script.write_text("import pathlib, shutil, sys\n"
                      "shutil.copy(sys.argv[1] + '/a_0000.nii.gz', pathlib.Path(sys.argv[2]) / 'a.nii')\n")
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command",
                 f"{sys.executable} {script} {{inputs}} {{outputs}}", "--baseline", "0", "--gpu", "none"]) == 1
    row = pd.read_csv(tmp_path / "out" / "efficiency.csv").iloc[0]
    assert row["Status"] == "no-output"
    assert row["Detail"] == "a.nii.gz was not written (a.nii was, under another name: outputs are named <case>.nii.gz)"


def test_inputs_whose_outputs_would_overwrite_each_other_are_refused(tmp_path, capsys):
    """a_0000.nii.gz and a.nii.gz both write a.nii.gz: exit 2 before anything runs, both named."""
    inputs = _cases(tmp_path / "inputs", ("a",))
    (inputs / "a.nii.gz").write_bytes((inputs / "a_0000.nii.gz").read_bytes())
    with pytest.raises(SystemExit) as exc:
        main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", "x {inputs} {outputs}"])
    assert exc.value.code == 2
    assert "a.nii.gz and a_0000.nii.gz are one case, a.nii.gz" in capsys.readouterr().err


@pytest.mark.parametrize(("stop", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_sigterm_stops_the_running_case(tmp_path, stop, code, word):
    """The case runs in a session of its own, out of a terminal's reach: Ctrl-C or SIGTERM (`docker
    stop`, `timeout`, a scheduler) on the harness must kill it (and what it started) itself, then
    end with one line and exit code 130 or 143."""
    inputs = _cases(tmp_path / "inputs", ("hang",))
    pids_file = tmp_path / "pids.txt"
    command = f"FAKE_PIDS={pids_file} /bin/sh {FAKES / 'hang.sh'} {{inputs}} {{outputs}}"
    harness = subprocess.Popen([sys.executable, "-m", "evaluation.efficiency", "--inputs", str(inputs), "--out",
                                str(tmp_path / "out"), "--command", command, "--timeout", "600", "--baseline", "0"],
                               cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 300
    while not pids_file.is_file() and harness.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_file.is_file(), harness.communicate()[1] if harness.poll() is not None else "the case never started"
    harness.send_signal(stop)
    _, err = harness.communicate(timeout=300)
    assert harness.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == word
    pids = [int(p) for p in pids_file.read_text().split()]
    deadline = time.monotonic() + 60
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids)  # the script, its child and its double-forked daemon
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "efficiency.csv", "efficiency.json", "logs", "predictions", "samples"]  # no case folder
    summary = json.loads((tmp_path / "out" / "efficiency.json").read_text())  # stopped in its first case: says so
    assert summary["cases"] == 0 and summary["verdict"]["passed"] is False
    assert summary["problems"] == [f"only 0 of {summary['cases_planned']} case(s) run"]


def test_a_rerun_into_the_same_out_never_keeps_an_earlier_runs_output(tmp_path, capsys):
    """A case that now crashes must be scored as missing, not on the output of the run before; an
    output of a case no longer among the inputs goes too (with a notice)."""
    inputs = _cases(tmp_path / "inputs", ("normal",))
    out = tmp_path / "out"
    works = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    assert main(["--inputs", str(inputs), "--out", str(out), "--command", works, "--baseline", "0"]) == 0
    assert (out / "predictions" / "normal.nii.gz").is_file()
    (out / "predictions" / "gone.nii.gz").write_bytes(b"an output of a case not in this run")
    capsys.readouterr()
    assert main(["--inputs", str(inputs), "--out", str(out), "--command", "exit 3 # {inputs} {outputs}",
                 "--baseline", "0"]) == 1
    assert list((out / "predictions").iterdir()) == []
    assert "removed 1 file(s) of an earlier run" in capsys.readouterr().err
    (out / "logs" / "gone.log").write_text("a log of a case not in this run")
    (out / "samples" / "gone.csv").write_text("t_s\n")
    (out / "work" / "mine").mkdir(parents=True)  # the user's own folder: never the harness's to remove
    assert main(["--inputs", str(inputs), "--out", str(out), "--command", works, "--baseline", "0"]) == 0
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["normal.log"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["normal.csv"]
    assert sorted(p.name for p in out.iterdir()) == [
        "efficiency.csv", "efficiency.json", "logs", "predictions", "samples", "work"]
    assert (out / "work" / "mine").is_dir()


class FlakyGpu(FakeGpu):
    """A GPU whose NVML readings fail from the nth on (an Xid error: the GPU is lost)."""

    def __init__(self, works_for: int):
        super().__init__([1000.0])
        self.works_for = works_for

    def used_mb(self):
        if self.calls >= self.works_for:
            raise RuntimeError("NVMLError_GpuIsLost: GPU is lost")
        return super().used_mb()

    def process_count(self):
        if self.calls >= self.works_for:
            raise RuntimeError("NVMLError_GpuIsLost: GPU is lost")
        return 0


def test_failing_gpu_readings_are_not_measured_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    gpu = FlakyGpu(works_for=3)
    monkeypatch.setattr("evaluation.efficiency.choose_gpu", lambda choice, open_gpu=None: (0, gpu))
    inputs = _cases(tmp_path / "inputs", ("normal", "slow"))
    command = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", command,
                 "--baseline", "0.2", "--interval", "0.05"]) == 1  # done, with problems: the failed readings
    table = pd.read_csv(tmp_path / "out" / "efficiency.csv").set_index("Name")
    assert table["Status"].eq("ok").all() and math.isnan(table.loc["slow.nii.gz", "BaselineGPU_MB"])
    slow = pd.read_csv(tmp_path / "out" / "samples" / "slow.csv")
    assert len(slow) >= 20 and slow["gpu_used_mb"].isna().all() and slow["ram_used_mb"].gt(0).all()  # still sampled
    err = capsys.readouterr().err.splitlines()
    notices = [line for line in err if "GpuIsLost" in line and line.startswith("notice: ")]
    assert len(notices) == 2 and all(line.startswith("notice: reading GPU") for line in notices)  # memory, processes
    summary = json.loads((tmp_path / "out" / "efficiency.json").read_text())
    assert set(summary["failed_readings"]) == {"GPU memory (NVML)", "GPU processes (NVML)"}
    assert len(summary["problems"]) == 2 and all(f"problem: {p}" in err for p in summary["problems"])
    never = measure(FlakyGpu(works_for=0), seconds=0.1, interval_s=0.05)
    assert math.isnan(never.gpu_mb) and never.gpu_processes is None and never.ram_mb > 0


def test_a_sampler_outlives_a_failing_reading():
    sampler = Sampler(FlakyGpu(works_for=2), interval_s=0.05).start()
    time.sleep(0.4)
    samples = pd.DataFrame(sampler.stop())
    assert len(samples) >= 5 and samples["gpu_used_mb"].tolist()[:2] == [1000.0, 1000.0]
    assert samples["gpu_used_mb"].iloc[2:].isna().all() and samples["ram_used_mb"].gt(0).all()
    assert set(sampler.readings.failed) == {"GPU memory (NVML)"}


def test_an_error_of_the_harness_on_one_case_fails_that_case_only(tmp_path, monkeypatch):
    import evaluation.efficiency as efficiency

    real = efficiency._check_output

    def breaks_on_slow(output, case):
        if case.name.startswith("slow"):
            raise OSError(28, "No space left on device")
        return real(output, case)

    monkeypatch.setattr(efficiency, "_check_output", breaks_on_slow)
    inputs = _cases(tmp_path / "inputs", ("normal", "slow"))
    command = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", command,
                 "--baseline", "0"]) == 1
    table = pd.read_csv(tmp_path / "out" / "efficiency.csv").set_index("Name")
    assert table["Status"].to_dict() == {"normal.nii.gz": "ok", "slow.nii.gz": "error"}
    assert "No space left on device" in table.loc["slow.nii.gz", "Detail"]
    assert [p.name for p in (tmp_path / "out" / "predictions").iterdir()] == ["normal.nii.gz"]
    assert pd.read_csv(tmp_path / "out" / "samples" / "slow.csv").empty


def test_an_interrupted_run_keeps_its_finished_cases(tmp_path, monkeypatch):
    import evaluation.efficiency as efficiency

    real = efficiency.run_case

    def interrupted_on_slow(case, *args):
        if case.name.startswith("slow"):
            raise KeyboardInterrupt
        return real(case, *args)

    monkeypatch.setattr(efficiency, "run_case", interrupted_on_slow)
    inputs = _cases(tmp_path / "inputs", ("normal", "slow"))
    command = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    with pytest.raises(KeyboardInterrupt):
        main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", command, "--baseline", "0"])
    assert pd.read_csv(tmp_path / "out" / "efficiency.csv")["Name"].tolist() == ["normal.nii.gz"]
    summary = json.loads((tmp_path / "out" / "efficiency.json").read_text())
    assert summary["cases"] == 1 and summary["cases_planned"] == 2
    assert summary["verdict"]["passed"] is False and summary["problems"] == ["only 1 of 2 case(s) run"]


def test_a_failed_limit_of_the_year_is_a_problem_and_exit_code_1(tmp_path, monkeypatch, capsys):
    import dataclasses

    flare21 = get_rules("flare21")
    tight = dataclasses.replace(flare21, efficiency=dataclasses.replace(flare21.efficiency, set_time_s=1))
    monkeypatch.setattr("evaluation.efficiency.get_rules", lambda name: tight)
    inputs = _cases(tmp_path / "inputs", ("normal",))
    command = f"{sys.executable} {FAKES / 'submission.py'} {{inputs}} {{outputs}}"
    assert main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--command", command,
                 "--baseline", "0"]) == 1
    problems = json.loads((tmp_path / "out" / "efficiency.json").read_text())["problems"]
    assert len(problems) == 1 and problems[0].startswith("limit not met: 100 cases within 0.000277778 h: ")
    assert f"problem: {problems[0]}" in capsys.readouterr().err


def test_a_case_shorter_than_one_interval_is_measured():
    """The sampler's first sample comes one interval after the start: a final one at the stop
    gives a fast case its figures (NaN would rank it after every measured case)."""
    sampler = Sampler(interval_s=30.0).start()
    time.sleep(0.05)
    samples = pd.DataFrame(sampler.stop())
    assert len(samples) == 1 and 0.05 <= samples["t_s"].iloc[0] < 30
    row = case_figures("a.nii.gz", samples, 0.05, "ok", "", get_rules("flare22").efficiency)
    assert row["MaxRAM"] > 0 and row["AUC_RAM_Time"] > 0 and math.isfinite(row["AUC_CPU_Time"])
    assert needs_final_sample([], 0.001, 0.1) and needs_final_sample([0.1, 0.2], 0.26, 0.1)
    assert not needs_final_sample([0.1, 0.2], 0.24, 0.1)  # a sample 40 ms old stands for the end
