"""The README's quick start and its flare-run example, run as a new user runs them: one after the
other, from the checkout, the virtual environment never activated (smaller phantoms, the same
commands)."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> tuple[list[str], str]:
    """The quick start's steps after the set-up (pip), and the flare-run example after it."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", text[text.index("## Quick start"):], re.S)
    steps = blocks[0].split(" && ")
    assert steps[0].startswith("python3 -m venv .venv") and ".venv/bin/pip install" in steps[1]
    return steps[2:], blocks[1]


def as_here(command: str, work: Path) -> list[str]:
    """A README command for this checkout and interpreter: .venv/bin/ -> this interpreter's
    folder, predict.sh -> this checkout's, example/ -> a scratch folder, three full-size phantoms ->
    one small one."""
    command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    command = command.replace("sh predict.sh", f"sh {ROOT / 'predict.sh'}").replace("example/", f"{work}/example/")
    command = command.replace("--out example ", f"--out {work}/example ").replace("--cases 3", "--cases 1 --max-side 112")
    return shlex.split(command)


def test_quick_start_then_the_run_example_work_without_activating_the_venv(tmp_path):
    if not (ROOT / "weights" / "flare21_c2f.pt").is_file():
        pytest.skip("weights/flare21_c2f.pt not in this checkout (training/demo_weights.sh makes it)")
    steps, run_example = readme_commands()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "PYTHONPATH")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    for step in steps:
        done = subprocess.run(as_here(step, tmp_path), env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=1200)
        assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
    assert len(list((tmp_path / "example" / "segmentations").iterdir())) == 1
    assert (tmp_path / "example" / "scores" / "metrics.csv").is_file()

    done = subprocess.run(as_here(run_example, tmp_path), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, f"{run_example}\n{done.stdout}\n{done.stderr}"
    results = pd.read_csv(tmp_path / "example" / "run" / "results.csv")
    assert results["Status"].tolist() == ["ok"] and (tmp_path / "example" / "run" / "report.html").is_file()
