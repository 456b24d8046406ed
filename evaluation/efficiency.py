"""Measure a submission's efficiency the organisers' way: one fresh start per case, sampled.

    python -m evaluation.efficiency --inputs DIR --out DIR (--image NAME | --command CMD)
        [--rules flare21|flare22|flare23] [--gpu N] [--interval 0.1] [--timeout S]

Each case is copied alone into a fresh inputs folder and the submission is started once for it:
`--image` runs the organisers' `docker container run --gpus "device=N" --rm -v ...:/workspace/inputs/
-v ...:/workspace/outputs/ IMAGE /bin/bash -c "sh predict.sh"`, with a unique container name, no
network, read-only inputs and a memory limit; `--command` runs a local shell command whose
`{inputs}` and `{outputs}` are replaced by the folders. While it runs, evaluation/sampler.py
samples GPU memory (NVML), CPU and RAM. Writes OUT/efficiency.csv (official columns, then
Status, Detail and extras), OUT/samples/<case>.csv (every sample), OUT/efficiency.json (the
rows and the set-level verdict), OUT/predictions/ (the outputs) and OUT/logs/ (what each run
printed). Exit code 0: every case ok; 1: some case timed out, crashed or gave no valid output;
2: usage error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pandas as pd
import psutil
from tqdm import tqdm

from evaluation.imageio import InputError, nifti_files, output_name, read_labels, volume_shape
from evaluation.nvml import GpuMemory
from evaluation.report import write_atomic
from evaluation.rules import DEFAULT_RULES, RULES, EfficiencyRules, get_rules
from evaluation.sampler import COLUMNS, ProcessTree, Sampler
from evaluation.usage import EXTRA_COLUMNS, OFFICIAL_COLUMNS, case_figures, set_verdict

KILL_GRACE_S = 5.0
ATTACH_RETRY_S = 0.25  # how often to look for the container's process (a `docker inspect` each time)


@dataclass
class Submission:
    """How to start the submission on one case: a Docker image or a local shell command."""

    image: str | None = None
    command: str | None = None
    docker: str = "docker"
    gpu: int = 0
    memory: str = "28g"
    docker_args: tuple[str, ...] = ()

    def argv(self, inputs: Path, outputs: Path, name: str) -> list[str]:
        """The command line for one case; `name` is the container name (unique per run)."""
        if self.image:
            return [self.docker, "container", "run", "--gpus", f"device={self.gpu}", "--name", name, "--rm",
                    "--network", "none", "--memory", self.memory, "--security-opt", "no-new-privileges",
                    *self.docker_args,
                    "-v", f"{inputs.resolve()}/:/workspace/inputs/:ro", "-v", f"{outputs.resolve()}/:/workspace/outputs/",
                    self.image, "/bin/bash", "-c", "sh predict.sh"]
        command = self.command.format(inputs=shlex.quote(str(inputs)), outputs=shlex.quote(str(outputs)))
        return ["/bin/sh", "-c", command]

    def tree(self, proc: subprocess.Popen, name: str) -> ProcessTree | None:
        """The processes doing the work: the command's own tree, or the container's (found by name)."""
        try:
            if not self.image:
                return ProcessTree(proc.pid)
            pid = subprocess.run([self.docker, "inspect", "-f", "{{.State.Pid}}", name], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            return ProcessTree(int(pid)) if pid.isdigit() and int(pid) > 0 else None
        except (psutil.Error, subprocess.SubprocessError, OSError, ValueError):
            return None

    def kill(self, proc: subprocess.Popen, name: str, tree: ProcessTree | None) -> None:
        """Stop everything the case started: the container, the process group, stray descendants."""
        if self.image:
            subprocess.run([self.docker, "kill", name], capture_output=True, timeout=30)
        stragglers = tree.processes() if tree else []
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in stragglers:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass


def _check_output(output: Path, case: Path) -> tuple[str, str]:
    """(status, detail) of a finished case from its output file."""
    if not output.is_file():
        return "no-output", f"{output.name} was not written"
    try:
        expected = volume_shape(nib.load(case).shape)
        labels = read_labels(output).data
    except InputError as exc:
        return "no-output", f"{output.name}: {exc}"
    if labels.shape != expected:
        return "no-output", f"{output.name}: shape {labels.shape}, input {expected}"
    return "ok", ""


def run_case(case: Path, submission: Submission, out: Path, rules: EfficiencyRules, gpu: GpuMemory | None,
             interval_s: float, timeout_s: float) -> tuple[dict, pd.DataFrame]:
    """Run the submission on one case in fresh folders, sampled; returns its row and its samples."""
    name = output_name(case)
    work = out / "work" / name.removesuffix(".nii.gz")
    shutil.rmtree(work, ignore_errors=True)
    inputs, outputs = work / "inputs", work / "outputs"
    inputs.mkdir(parents=True)
    outputs.mkdir()
    shutil.copy2(case, inputs / case.name)
    container = f"flare-eval-{uuid.uuid4().hex[:12]}"
    log = out / "logs" / f"{name.removesuffix('.nii.gz')}.log"
    attached: list[ProcessTree | None] = [None]
    sampler = Sampler(gpu, tree=lambda: attached[0], interval_s=interval_s).start()
    start = time.perf_counter()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(submission.argv(inputs, outputs, container), stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out, next_attach = False, start
        while proc.poll() is None:
            if attached[0] is None and time.perf_counter() >= next_attach:
                attached[0] = submission.tree(proc, container)
                next_attach = time.perf_counter() + ATTACH_RETRY_S
            if time.perf_counter() - start > timeout_s:
                timed_out = True
                submission.kill(proc, container, attached[0])
                break
            time.sleep(0.02)
    wall = time.perf_counter() - start
    samples = pd.DataFrame(sampler.stop(), columns=list(COLUMNS))
    if timed_out:
        status, detail = "timeout", f"killed after {timeout_s:g} s"
    elif proc.returncode != 0:
        status, detail = "crashed", f"exit code {proc.returncode} (see logs/{log.name})"
    else:
        status, detail = _check_output(outputs / name, case)
    if status == "ok":
        shutil.copy2(outputs / name, out / "predictions" / name)
    shutil.rmtree(work, ignore_errors=True)
    return case_figures(name, samples, wall, status, detail, rules), samples


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.efficiency",
                                     description="Time and sample a submission case by case, the FLARE way.")
    parser.add_argument("--inputs", required=True, type=Path, help="folder of <case>_0000.nii.gz images")
    parser.add_argument("--out", "-o", required=True, type=Path, help="folder for the results")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--image", help="Docker image to run (e.g. team:latest)")
    how.add_argument("--command", help="local command with {inputs} and {outputs} placeholders")
    parser.add_argument("--rules", choices=sorted(RULES), default=DEFAULT_RULES)
    parser.add_argument("--gpu", type=int, default=0, help="GPU index for the container and NVML (default 0)")
    parser.add_argument("--interval", type=float, default=0.1, help="sampling interval in s (default 0.1)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a case is killed (default 3600)")
    parser.add_argument("--docker", default="docker", help="docker binary (default: docker)")
    parser.add_argument("--memory", default="28g", help="container memory limit (default 28g)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs.is_dir():
        parser.error(f"--inputs {args.inputs}: not a folder")
    if args.command and ("{inputs}" not in args.command or "{outputs}" not in args.command):
        parser.error("--command needs the {inputs} and {outputs} placeholders")
    if args.interval <= 0 or args.timeout <= 0:
        parser.error("--interval and --timeout must be positive")
    if args.image and shutil.which(args.docker) is None:
        parser.error(f"--docker {args.docker}: not found")
    cases = nifti_files(args.inputs)
    if not cases:
        parser.error(f"--inputs {args.inputs}: no .nii.gz or .nii files")
    rules = get_rules(args.rules)
    for sub in ("samples", "predictions", "logs"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    submission = Submission(args.image, args.command, args.docker, args.gpu, args.memory,
                            rules.efficiency.docker_args)
    gpu = GpuMemory.open(args.gpu)

    rows = []
    for case in tqdm(cases, desc="running", unit="case", file=sys.stderr, disable=None):
        row, samples = run_case(case, submission, args.out, rules.efficiency, gpu, args.interval, args.timeout)
        write_atomic(args.out / "samples" / f"{row['Name'].removesuffix('.nii.gz')}.csv", samples.to_csv(index=False))
        rows.append(row)
        gpu_text = "GPU n/a" if math.isnan(row["MaxGPU_Mem"]) else f"GPU {row['MaxGPU_Mem']:.0f} MB"
        print(f"{row['Name']}: {row['Status']}, {row['Time']:.1f} s, {gpu_text}, RAM {row['MaxRAM']:.0f} MB"
              + (f" ({row['Detail']})" if row["Detail"] else ""), flush=True)

    shutil.rmtree(args.out / "work", ignore_errors=True)
    table = pd.DataFrame(rows, columns=OFFICIAL_COLUMNS + EXTRA_COLUMNS)
    verdict = set_verdict(table, rules.efficiency)
    write_atomic(args.out / "efficiency.csv", table.to_csv(index=False))
    summary = {"rules": rules.name, "submission": args.image or args.command, "gpu": gpu.name if gpu else None,
               "interval_s": args.interval, "timeout_s": args.timeout, "cases": len(rows),
               "not_ok": int((table["Status"] != "ok").sum()), "verdict": verdict,
               "rows": json.loads(table.to_json(orient="records"))}
    write_atomic(args.out / "efficiency.json", json.dumps(summary, indent=2) + "\n")
    for check in verdict["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[check["passed"]]
        print(f"{mark} {check['limit']}: {check['value']}")
    return 0 if summary["not_ok"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
