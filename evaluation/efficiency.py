"""Measure a submission's efficiency the organisers' way: one fresh start per case, sampled.

    flare-efficiency --inputs DIR --out DIR (--image NAME | --command CMD)   (or python -m evaluation.efficiency)
        [--rules flare21|flare22|flare23] [--gpu auto|N|none] [--interval 0.1] [--timeout S]
        [--failures official|penalised] [--baseline 1] [--busy-cpu 10] [--isolated] [--memory SIZE]

Each case is copied alone into a fresh inputs folder and the submission is started once for it:
`--image` runs the organisers' `docker container run --gpus "device=N" --rm -v ...:/workspace/inputs/
-v ...:/workspace/outputs/ IMAGE /bin/bash -c "sh predict.sh"` with the year's options (FLARE23:
`--shm-size=28gb -m 28G`) and a unique container name (without `--gpus` under `--gpu none`, the
CPU mode, which `--gpu auto` chooses when NVML sees no GPU); `--isolated` adds what the organisers
did not: no network, read-only inputs, no new privileges; `--command` runs a local shell command whose
`{inputs}` and `{outputs}` are replaced by the folders. While it runs, evaluation/sampler.py
samples GPU memory (NVML), CPU and RAM; before it starts, the machine is watched for a moment
(the idle check, evaluation/baseline.py) and the case is marked busy when it was not idle. Every
process the case leaves running, double-forked daemons included, is killed when it ends or times
out (evaluation/contain.py). Writes OUT/efficiency.csv (official columns, then
Status, Detail and extras), OUT/samples/<case>.csv (every sample), OUT/efficiency.json (the
rows, the set-level verdict and its problems), OUT/predictions/ (this run's valid outputs: a
case's output of an earlier run into the same OUT is removed before the case runs, and those of
cases not in INPUTS at the start) and OUT/logs/ (what each run printed). The two result files are
written again after every case, so an interrupted run keeps its finished cases. A GPU reading that
fails (NVML after the GPU is lost) is recorded as not measured, with one notice; an error of the
harness itself on one case makes it a failed case (status error) and the run goes on.
Exit code 0: every case ok, no limit of the year failed and every reading worked; 1: some case
timed out, crashed, gave no valid output or met an error, a limit of the year was not met, or a
reading failed (each listed: "problem: ..." on stderr); 2: usage error; 130: interrupted (Ctrl-C),
143: terminated (SIGTERM: `docker stop`, `timeout`, a scheduler; or SIGHUP: the terminal closed);
either way the running case's processes are killed and its work folder removed first.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import pandas as pd
import psutil

from evaluation import baseline
from evaluation.baseline import BUSY_CPU_PCT
from evaluation.contain import CaseProcesses, subreaper
from evaluation.imageio import read_label_runs
from evaluation.nvml import GpuMemory
from evaluation.rules import DEFAULT_RULES, RULES, EfficiencyRules, get_rules
from evaluation.sampler import COLUMNS, ProcessTree, Readings, Sampler
from evaluation.usage import (
    AREAS,
    DEFAULT_FAILURE_POLICY,
    EXTRA_COLUMNS,
    FAILURE_POLICIES,
    HARNESS_ERROR,
    OFFICIAL_COLUMNS,
    case_figures,
    is_failed,
    limit_problems,
    set_verdict,
)
from flare_common import cli
from flare_common.errors import InputError, describe_error
from flare_common.files import write_atomic
from flare_common.nifti import MISCASED, case_stem, folder_cases, is_nifti, miscased_nifti, output_name, volume_shape

KILL_GRACE_S = 5.0
DOCKER_KILL_S = 30.0  # how long `docker kill` may take before the case's processes are killed anyway
GPU_AUTO, GPU_NONE = "auto", "none"
ATTACH_RETRY_S = 0.25  # how often to look for the container's process (a `docker inspect` each time)
MIN_INTERVAL_S = 0.01  # the shortest sampling interval (a sample of a process tree takes milliseconds)
PLACEHOLDER = re.compile(r"\{(inputs|outputs)\}")  # in --command


@dataclass
class Submission:
    """How to start the submission on one case: a Docker image or a local shell command."""

    image: str | None = None
    command: str | None = None
    docker: str = "docker"
    gpu: int | None = 0  # the GPU given to the container (NVML's index); None: none (CPU mode, no --gpus)
    cuda_visible: str | None = None  # CUDA_VISIBLE_DEVICES for a command (None: the caller's environment as it is)
    memory: str | None = None  # docker's --memory, after the year's options (None: theirs alone)
    isolated: bool = False  # no network, read-only inputs, no new privileges (the organisers had none of these)
    docker_args: tuple[str, ...] = ()

    def argv(self, inputs: Path, outputs: Path, name: str) -> list[str]:
        """The command line for one case; `name` is the container name (unique per run)."""
        if self.image:
            gpus = [] if self.gpu is None else ["--gpus", f"device={self.gpu}"]
            isolation = ["--network", "none", "--security-opt", "no-new-privileges"] if self.isolated else []
            memory = ["--memory", self.memory] if self.memory else []
            return [self.docker, "container", "run", *gpus, "--name", name, "--rm", *isolation, *self.docker_args,
                    *memory, "-v", f"{inputs.resolve()}/:/workspace/inputs/" + (":ro" if self.isolated else ""),
                    "-v", f"{outputs.resolve()}/:/workspace/outputs/", self.image, "/bin/bash", "-c", "sh predict.sh"]
        folders = {"inputs": shlex.quote(str(inputs)), "outputs": shlex.quote(str(outputs))}
        command = PLACEHOLDER.sub(lambda m: folders[m.group(1)], self.command)  # at once: a path may hold "{outputs}"
        return ["/bin/sh", "-c", command]  # any other braces are the shell's (${VAR:-x}, awk '{print}')

    def env(self) -> dict[str, str] | None:
        """The environment a command runs in: this one with CUDA_VISIBLE_DEVICES set to
        `cuda_visible` (a GPU's UUID, an index counted in PCI bus order as NVML counts, or "" for
        none), or None to leave it as it is (and for an image: docker's --gpus chooses)."""
        if self.image or self.cuda_visible is None:
            return None
        order = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"} if self.cuda_visible.isdigit() else {}
        return {**os.environ, "CUDA_VISIBLE_DEVICES": self.cuda_visible, **order}

    def tree(self, proc: subprocess.Popen, name: str, processes: CaseProcesses) -> ProcessTree | None:
        """The processes doing the work: the command's (its tree and adopted orphans), or the
        container's (found by name)."""
        try:
            if not self.image:
                return ProcessTree(proc.pid, processes.processes)
            pid = subprocess.run([self.docker, "inspect", "-f", "{{.State.Pid}}", name], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            return ProcessTree(int(pid)) if pid.isdigit() and int(pid) > 0 else None
        except (psutil.Error, subprocess.SubprocessError, OSError, ValueError):
            return None

    def kill(self, proc: subprocess.Popen, name: str, processes: CaseProcesses) -> None:
        """Stop everything the case started: the container, then every process of the case
        (its session, its tree and double-forked orphans)."""
        if self.image:
            with contextlib.suppress(subprocess.SubprocessError, OSError):  # a hung docker: its client is killed below
                subprocess.run([self.docker, "kill", name], capture_output=True, timeout=DOCKER_KILL_S)
        processes.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE_S)


def _check_output(output: Path, case: Path) -> tuple[str, str]:
    """(status, detail) of a finished case from its output file."""
    if not output.is_file():
        others = sorted(p.name for p in output.parent.iterdir() if p.name != output.name and is_nifti(p)
                        and output_name(p) == output.name) if output.parent.is_dir() else []
        return "no-output", f"{output.name} was not written" + (f" ({', '.join(others)} was, under another name: "
                                                               "outputs are named <case>.nii.gz)" if others else "")
    try:
        expected = volume_shape(nib.load(case).shape)
    except Exception as exc:  # the input itself is broken: nothing to check the output against
        return "no-output", f"input {case.name} unreadable ({describe_error(exc)})"
    try:
        labels = read_label_runs(output).runs  # checked as the scorer reads it, never held whole
    except InputError as exc:
        return "no-output", f"{output.name}: {exc}"
    if labels.shape != expected:
        return "no-output", f"{output.name}: shape {labels.shape}, input {expected}"
    return "ok", ""


@dataclass(frozen=True)
class Measurement:
    """How each case is measured: the year's efficiency rules; the GPU NVML reads (None: no GPU
    measured); the sampling interval and the timeout (s); the failure policy (FAILURE_POLICIES);
    how long the machine is watched before each case (s, the idle check; 0: off) and the system
    CPU (%) above which it counts as busy; how areas are computed (AREAS); the count of failed
    readings every case's sampler adds to."""

    rules: EfficiencyRules
    gpu: GpuMemory | None
    interval_s: float
    timeout_s: float
    policy: str = DEFAULT_FAILURE_POLICY
    baseline_s: float = 1.0
    busy_cpu_pct: float = BUSY_CPU_PCT
    areas: str = AREAS[0]
    readings: Readings = field(default_factory=Readings)


def run_case(case: Path, submission: Submission, out: Path, measurement: Measurement) -> tuple[dict, pd.DataFrame]:
    """Run the submission on one case in fresh folders (a hidden folder of its own in `out`,
    removed after), sampled as `measurement` says; returns its row and its samples.

    The case's output of an earlier run is removed from OUT/predictions first. The machine is
    watched for baseline_s seconds (the idle check). The case ends when the started process exits
    (or is killed at the timeout); whatever it leaves running is killed then and counted in
    Detail. Failing readings are NaN, counted in the measurement's readings. The case's time ends
    when the process is seen to exit or the timeout fires (not after the kill)."""
    name = output_name(case)
    (out / "predictions" / name).unlink(missing_ok=True)  # never scored on an earlier run's output
    work = Path(tempfile.mkdtemp(prefix=f".work-{case_stem(name)}-", dir=out))  # the case's alone
    try:
        return _run_in(work, case, name, submission, out, measurement)
    finally:  # a finished case, an error (a full disk), Ctrl-C: the case's folders go
        shutil.rmtree(work, ignore_errors=True)


def _run_in(work: Path, case: Path, name: str, submission: Submission, out: Path,
            m: Measurement) -> tuple[dict, pd.DataFrame]:
    """run_case in the case's own folder `work`."""
    inputs, outputs = work / "inputs", work / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    try:
        shutil.copy2(case, inputs / case.name)
    except OSError as exc:  # a broken link, an unreadable file
        raise InputError(f"input {case.name} could not be read ({describe_error(exc)})") from None
    container = f"flare-eval-{uuid.uuid4().hex[:12]}"
    log = out / "logs" / f"{case_stem(name)}.log"
    base = baseline.measure(m.gpu, m.baseline_s, m.interval_s, m.readings)
    busy = baseline.busy_reasons(base, m.busy_cpu_pct)
    attached: list[ProcessTree | None] = [None]
    processes = CaseProcesses()
    sampler = Sampler(m.gpu, tree=lambda: attached[0], interval_s=m.interval_s, readings=m.readings).start()
    start = time.perf_counter()
    try:
        with open(log, "w") as log_file:
            proc = subprocess.Popen(submission.argv(inputs, outputs, container), stdout=log_file, env=submission.env(),
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            processes.attach(proc)
            timed_out, next_attach = False, start
            try:
                while proc.poll() is None:
                    if attached[0] is None and time.perf_counter() >= next_attach:
                        attached[0] = submission.tree(proc, container, processes)
                        next_attach = time.perf_counter() + ATTACH_RETRY_S
                    if time.perf_counter() - start > m.timeout_s:
                        timed_out, wall = True, time.perf_counter() - start
                        submission.kill(proc, container, processes)
                        break
                    time.sleep(0.02)
                else:
                    wall = time.perf_counter() - start
            except BaseException:  # Ctrl-C or an error: the case runs in its own session, so it is stopped here
                submission.kill(proc, container, processes)
                raise
    except BaseException:
        sampler.stop()
        raise
    samples = pd.DataFrame(sampler.stop(), columns=list(COLUMNS))
    left_behind = 0 if timed_out else (processes.kill() if processes.processes(search_session=True) else 0)
    processes.reap()  # orphans that ended by themselves
    if timed_out:
        status, detail = "timeout", f"killed after {m.timeout_s:g} s"
    elif proc.returncode != 0:
        status, detail = "crashed", f"exit code {proc.returncode} (see logs/{log.name})"
    else:
        status, detail = _check_output(outputs / name, case)
    if left_behind:
        detail = "; ".join(filter(None, [detail, f"{left_behind} process(es) still running at the exit were killed"]))
    if status == "ok":
        shutil.copy2(outputs / name, out / "predictions" / name)
    step = m.interval_s if m.areas == "official" else None
    return case_figures(name, samples, wall, status, detail, m.rules, m.policy, base, busy, step), samples


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m evaluation.efficiency", "Time and sample a submission case by case, the FLARE way.", [
        'flare-efficiency --inputs example/images --out example/efficiency --command "sh predict.sh {inputs} {outputs}"',
        "flare-efficiency --inputs images/ --out eff/ --image team:latest --rules flare22 --gpu 1",
    ])
    parser.add_argument("--inputs", required=True, type=Path, metavar="DIR",
                        help="folder of <case>_0000.nii.gz images (required)")
    parser.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="folder for the results (required)")
    add_run_arguments(parser)
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How the submission is started and measured: the options evaluation.run passes on."""
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--image", metavar="NAME", help="Docker image to run, e.g. team:latest (this or --command)")
    how.add_argument("--command", metavar="CMD",
                     help='local command with {inputs} and {outputs} placeholders (replaced by the quoted folders; '
                          'other braces are left to the shell), e.g. "sh predict.sh {inputs} {outputs}" (this or --image)')
    parser.add_argument("--rules", choices=sorted(RULES), default=DEFAULT_RULES,
                        help="which year's limits, stuck values and docker options (default %(default)s)")
    parser.add_argument("--gpu", type=gpu_choice, default=GPU_AUTO, metavar="auto|N|none",
                        help="GPU index (nvidia-smi's) for the container or the command (which sees only that "
                             "GPU) and NVML; none: no GPU (the image runs without --gpus, the command sees none, "
                             "GPU memory is not measured); auto: the first GPU CUDA_VISIBLE_DEVICES names (a UUID, "
                             "or an index taken as nvidia-smi's), else GPU 0, when NVML sees it; else none, with a "
                             "notice, and a command's environment left as it is (default %(default)s)")
    parser.add_argument("--interval", type=cli.finite_float, default=0.1, metavar="S",
                        help="sampling interval in s (default %(default)s)")
    parser.add_argument("--timeout", type=cli.finite_float, default=3600.0, metavar="S",
                        help="seconds before a case is killed (default %(default)g)")
    parser.add_argument("--docker", default="docker", metavar="PATH", help="docker binary (default %(default)s)")
    parser.add_argument("--memory", metavar="SIZE",
                        help="container memory limit, docker's --memory (default: the year's, FLARE23's 28G; none before)")
    parser.add_argument("--isolated", action="store_true",
                        help="run the image without network, with read-only inputs and no new privileges (safer for "
                             "images you do not trust; the organisers ran them without these: default off)")
    parser.add_argument("--failures", choices=FAILURE_POLICIES, default=DEFAULT_FAILURE_POLICY,
                        help="official (default, as the organisers' scripts did): only timeouts get the year's stuck "
                             "values where it has them and failed cases rank by their measured values; penalised: "
                             "every failed case (timeout, crash, no valid output) gets them and ranks last")
    parser.add_argument("--areas", choices=AREAS, default=AREAS[0],
                        help="official (default, as the organisers computed them): each area is the sum of the samples "
                             "x the sampling interval; real-time: the integral over the samples' real times, to the "
                             "case's end (no error from a late sample or a case ending between samples)")
    parser.add_argument("--baseline", type=cli.finite_float, default=1.0, metavar="S",
                        help="seconds to watch the machine before each case (idle check; default 1, 0: off)")
    parser.add_argument("--busy-cpu", type=cli.finite_float, default=BUSY_CPU_PCT, metavar="PCT",
                        help=f"system CPU %% before a case above which it is marked busy (default {BUSY_CPU_PCT:g})")


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, predictions: Path) -> list[Path]:
    """The cases of --inputs, after refusing (parser.error: exit 2, the parser's own usage line)
    a bad --inputs (among them the folder `predictions`, whose files the run replaces) and the
    options of add_run_arguments that argparse alone cannot check."""
    if not args.inputs.is_dir():
        parser.error(f"--inputs {args.inputs}: not a folder")
    if args.inputs.resolve().is_relative_to(predictions.resolve()):
        parser.error(f"--inputs {args.inputs}: the run writes its predictions there (choose another --out)")
    if args.command and ("{inputs}" not in args.command or "{outputs}" not in args.command):
        parser.error("--command needs the {inputs} and {outputs} placeholders")
    if args.interval < MIN_INTERVAL_S or args.timeout <= 0:
        parser.error(f"--interval must be at least {MIN_INTERVAL_S:g} s and --timeout positive")
    if args.baseline < 0:
        parser.error("--baseline must be 0 or more")
    if not 0 <= args.busy_cpu <= 100:
        parser.error("--busy-cpu is a percentage: 0 to 100")
    if args.image and shutil.which(args.docker) is None:
        parser.error(f"--docker {args.docker}: not found")
    cases, problem = folder_cases(args.inputs, output_name)  # two inputs of one output would overwrite it
    if problem:
        parser.error(f"--inputs {args.inputs}: {problem}")
    miscased = miscased_nifti(args.inputs)
    if miscased:
        print(f"notice: --inputs {args.inputs}: {', '.join(p.name for p in miscased)}: {MISCASED}", file=sys.stderr)
    return cases


def gpu_choice(text: str) -> int | str:
    """The value of --gpu: a GPU index, "auto" or "none"."""
    if text in (GPU_AUTO, GPU_NONE):
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a GPU index (0, 1, ...), auto or none")
    return int(text)


def choose_gpu(choice: int | str, open_gpu: Callable[..., GpuMemory | None] | None = None,
               ) -> tuple[int | None, GpuMemory | None]:
    """The GPU for --gpu `choice` and its NVML reader (`open_gpu`, default GpuMemory.open): (None,
    None) for none, and for auto when NVML sees no GPU 0 (no driver, no device, nvidia-ml-py
    missing), which a one-line notice says."""
    open_gpu = open_gpu or GpuMemory.open
    if choice == GPU_NONE:
        return None, None
    if choice == GPU_AUTO:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        first = "0" if visible is None else visible.split(",")[0].strip()
        if first.startswith(("GPU-", "MIG-")):
            gpu = open_gpu(uuid=first, quiet=True)
        else:
            gpu = open_gpu(int(first), quiet=True) if first.isdigit() else None
        if gpu is None:
            print(f"notice: no GPU visible (NVML finds no GPU {first or 'at all: CUDA_VISIBLE_DEVICES is empty'}): "
                  "running without a GPU (--gpu none), GPU memory is not measured", file=sys.stderr)
            return None, None
        return gpu.index, gpu
    return choice, open_gpu(choice)


def command_gpus(index: int | None, gpu: GpuMemory | None, hide: bool = False) -> str | None:
    """CUDA_VISIBLE_DEVICES for a local command: the sampled GPU alone, by UUID where NVML gives
    it (CUDA numbers GPUs fastest first, NVML by bus), so that the command runs on the GPU that is
    sampled, as a container given `--gpus device=N` does; none with `hide` (--gpu none); the
    caller's environment as it is (None) where there is no GPU index."""
    if hide:
        return ""
    if gpu is not None:
        return gpu.uuid or str(gpu.index)
    return None if index is None else str(index)


def harness_error_row(case: Path, exc: Exception, rules: EfficiencyRules, policy: str) -> dict:
    """The row of a case the harness could not run (its input unreadable: InputError) or failed
    on: status error, nothing measured."""
    empty = pd.DataFrame(columns=list(COLUMNS), dtype=float)
    detail = str(exc) if isinstance(exc, InputError) else f"the harness failed on this case ({describe_error(exc)})"
    return case_figures(output_name(case), empty, math.nan, HARNESS_ERROR, detail, rules, policy)


RESULT_FOLDERS = {"predictions": ".nii.gz", "logs": ".log", "samples": ".csv"}  # each case's file in each, by suffix


def stale_results(out: Path, cases: list[Path]) -> list[Path]:
    """The files in OUT's per-case folders (RESULT_FOLDERS) that belong to no case of this run
    (an earlier run's)."""
    stems = {case_stem(output_name(case)) for case in cases}
    return sorted(p for folder, suffix in RESULT_FOLDERS.items() for p in (out / folder).iterdir()
                  if p.is_file() and p.name.removesuffix(suffix) not in stems)


def reading_problems(failed: dict[str, str]) -> list[str]:
    """One line per kind of reading that failed during the run (sampler.Readings.failed)."""
    return [f"reading {what} failed ({error}): not measured (NaN) from then on, where it failed"
            for what, error in failed.items()]


def write_results(out: Path, rows: list[dict], head: dict, rules: EfficiencyRules) -> dict:
    """Write OUT/efficiency.csv and OUT/efficiency.json for the cases run so far; returns the
    JSON's content (`head`, the counts, the verdict, the problems of the whole run: limits not
    met and failed readings, and the rows)."""
    table = pd.DataFrame(rows, columns=OFFICIAL_COLUMNS + EXTRA_COLUMNS)
    verdict = set_verdict(table, rules, head.get("cases_planned"))
    write_atomic(out / "efficiency.csv", table.to_csv(index=False))
    summary = {**head, "cases": len(rows), "not_ok": int(table["Status"].map(is_failed).sum()),
               "busy_cases": [r["Name"] for r in rows if r["Machine"].startswith("busy")], "verdict": verdict,
               "problems": limit_problems(verdict) + reading_problems(head.get("failed_readings", {})),
               "rows": json.loads(table.to_json(orient="records"))}
    write_atomic(out / "efficiency.json", json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cases = check_run_arguments(parser, args, args.out / "predictions")
    cli.refuse_unwritable(parser, "--out", args.out, folder=True)
    return run(args, cases, args.out)


def run(args: argparse.Namespace, cases: list[Path], out: Path) -> int:
    """Run and measure the submission on each case into OUT, as the options of add_run_arguments
    in `args` say (checked by check_run_arguments, which gave `cases`); prints a line per case and
    the verdict; exit code 0 when every case ran and no limit or reading failed, else 1."""
    rules = get_rules(args.rules)
    for sub in RESULT_FOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    stale = stale_results(out, cases)
    for path in stale:
        path.unlink()
    if stale:
        print(f"notice: removed {len(stale)} file(s) of an earlier run from {out}'s {', '.join(RESULT_FOLDERS)} "
              "(cases not in --inputs)", file=sys.stderr)
    gpu_index, gpu = choose_gpu(args.gpu)
    submission = Submission(args.image, args.command, args.docker, gpu_index,
                            command_gpus(gpu_index, gpu, hide=args.gpu == GPU_NONE), args.memory, args.isolated,
                            rules.efficiency.docker_args)
    measurement = Measurement(rules.efficiency, gpu, args.interval, args.timeout, args.failures, args.baseline,
                              args.busy_cpu, args.areas)
    head = {"rules": rules.name, "submission": args.image or args.command, "gpu_index": gpu_index,
            "gpu": gpu.name if gpu else None, "interval_s": args.interval, "timeout_s": args.timeout,
            "failures": args.failures, "areas": args.areas, "baseline_s": args.baseline, "busy_cpu_pct": args.busy_cpu,
            "cases_planned": len(cases), "failed_readings": measurement.readings.failed}

    rows: list[dict] = []
    summary = write_results(out, rows, head, rules.efficiency)  # a run stopped in its first case says so
    with subreaper():
        for case in cli.progress(cases, desc="running", unit="case"):
            try:
                row, samples = run_case(case, submission, out, measurement)
            except Exception as exc:  # the harness's own failure on this case: the others still run
                (out / "predictions" / output_name(case)).unlink(missing_ok=True)
                row, samples = harness_error_row(case, exc, rules.efficiency, args.failures), pd.DataFrame(
                    columns=list(COLUMNS))
            write_atomic(out / "samples" / f"{case_stem(row['Name'])}.csv", samples.to_csv(index=False))
            rows.append(row)
            summary = write_results(out, rows, head, rules.efficiency)
            print(_case_line(row), flush=True)
            if row["Machine"].startswith("busy"):
                print(f"warning: {row['Name']}: the machine was not idle before the start ({row['Machine'][6:]}): the "
                      "system-wide figures include that work (see the process-tree figures)",
                      file=sys.stderr, flush=True)

    for check in summary["verdict"]["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[check["passed"]]
        source = "" if check["source"] == "both" else f" ({check['source']})"
        print(f"{mark} {check['limit']}{source}: {check['value']}")
    for problem in summary["problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    return 0 if summary["not_ok"] == 0 and not summary["problems"] else 1


def _case_line(row: dict) -> str:
    """The one line printed per case."""
    gpu_text = "GPU n/a" if math.isnan(row["MaxGPU_Mem"]) else f"GPU {row['MaxGPU_Mem']:.0f} MB"
    time_text = "time n/a" if math.isnan(row["Time"]) else f"{row['Time']:.1f} s"
    if row["Penalised"]:
        time_text += f" (penalty; measured {row['MeasuredTime']:.1f} s)"
    ram_text = "RAM n/a" if math.isnan(row["MaxRAM"]) else f"RAM {row['MaxRAM']:.0f} MB"
    return (f"{row['Name']}: {row['Status']}, {time_text}, {gpu_text}, {ram_text}"
            + (f" ({row['Detail']})" if row["Detail"] else ""))


if __name__ == "__main__":
    sys.exit(cli.run(main))
