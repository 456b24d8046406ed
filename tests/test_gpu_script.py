"""bench/gpu_train.sh runs on a GPU machine rented for minutes: its default mix of phantom variations must
parse as training.phantom options, and hold every variation the shipped weights' fine stage last
met (training/demo_weights.sh), so that a GPU run starts from no less than the CPU one did."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from training.phantom import command_line

ROOT = Path(__file__).resolve().parents[1]


def default_mix() -> list[str]:
    """The options of `mix="${MIX:-...}"` in bench/gpu_train.sh."""
    text = (ROOT / "bench" / "gpu_train.sh").read_text().replace("\\\n", " ")
    match = re.search(r'^mix="\$\{MIX:-(.*?)\}"$', text, re.MULTILINE)
    assert match, "bench/gpu_train.sh has no mix=\"${MIX:-...}\" line"
    return shlex.split(match.group(1))


def last_fine_set() -> list[str]:
    """The options of the last training set training/demo_weights.sh makes (the shipped fine stage's
    last fine-tune), without the set's name."""
    text = (ROOT / "training" / "demo_weights.sh").read_text().replace("\\\n", " ")
    sets = [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("phantom_set ")]
    return [options for name, *options in sets if name != "test"][-1]


def option_names(options: list[str]) -> set[str]:
    return {o for o in options if o.startswith("--")}


def test_the_default_mix_parses_as_phantom_options():
    args = command_line._parser().parse_args(["--out", "x", "--cases", "1", *default_mix()])
    drawn = {name: value for name, value in vars(args).items() if isinstance(value, float) and value > 0}
    assert len(drawn) >= 10, drawn
    assert all(0 < value <= 1 for value in drawn.values()), drawn


def test_the_default_mix_holds_every_variation_of_the_shipped_fine_stage():
    per_set = {"--cases", "--seed", "--max-side"}
    missing = option_names(last_fine_set()) - per_set - option_names(default_mix())
    assert not missing, f"bench/gpu_train.sh's default mix lacks {sorted(missing)}"


def test_every_shell_script_of_bench_parses():
    """`sh -n` on each: a syntax error found on the GPU machine costs the time it is rented for."""
    scripts = sorted((ROOT / "bench").glob("*.sh"))
    assert {"gpu_train.sh", "gpu_session.sh", "phantom_tests.sh"} <= {s.name for s in scripts}
    for script in scripts:
        done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_a_missing_init_checkpoint_stops_the_gpu_script_before_any_work(tmp_path):
    """INIT names the checkpoint both stages start from: a wrong path must cost seconds, not the
    minutes of phantoms and caches before training would find it."""
    env = {"PATH": "/usr/bin:/bin", "INIT": str(tmp_path / "nothing.pt"), "PYTHON": "false"}
    done = subprocess.run(["sh", str(ROOT / "bench" / "gpu_train.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "nothing.pt: no such checkpoint" in done.stderr
    assert not (tmp_path / "out").exists()


FAKE_PYTHON = r"""#!/bin/sh
# Stands in for the interpreter: logs its call, makes the folders and files the scripts expect,
# and fails (exit 3) where FAIL names the module.
echo "$*" >> "$CALLS"
[ "$1" = -c ] && { echo "torch fake"; exit 0; }
module="$2"
shift 2
dest=""
while [ $# -gt 0 ]; do
    case "$1" in --out|-o) dest="$2";; esac
    shift
done
[ "$module" = "${FAIL:-none}" ] && { echo "fake failure of $module" >&2; exit 3; }
[ -n "$dest" ] && [ "$module" != inference.checkpoint ] && mkdir -p "$dest"
case "$module" in
    bench.bench_submission) echo "| fake table |"; echo "{}" > "$dest/bench_submission.json";;
    evaluation.run) mkdir -p "$dest/efficiency" && echo "Name,Time" > "$dest/efficiency/efficiency.csv";;
    bench.bench_postprocessing) echo "| clean |"; [ -f "$PACKED" ] && echo "packed before" >> "$CALLS";;
    training.train) [ "$(basename "$dest")" = "${NO_WEIGHTS:-none}" ] && exit 4
                    printf 'weights of %s' "$(basename "$dest")" > "$dest/best.pt"; echo "step,loss" > "$dest/log.csv";;
    inference.checkpoint) printf 'combined' > "$dest";;
esac
exit 0
"""


def fake_python(tmp_path: Path) -> Path:
    path = tmp_path / "fakepy"
    path.write_text(FAKE_PYTHON)
    path.chmod(0o755)
    return path


def run_script(script: str, tmp_path: Path, out: str, **env: str) -> subprocess.CompletedProcess:
    """bench/SCRIPT with OUT given relative to tmp_path, from there, with the fake interpreter."""
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake_python(tmp_path)), "CALLS": str(tmp_path / "calls.txt"),
           "PACKED": str(tmp_path / out / "results.tgz"), "DEVICE": "cpu", **env}
    return subprocess.run(["sh", str(ROOT / "bench" / script), out], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_gpu_session_keeps_every_steps_output_under_a_relative_out_and_packs_before_the_cpu_step(tmp_path):
    done = run_script("gpu_session.sh", tmp_path, "rel/out")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "rel" / "out"
    assert (out / "bench_submission.out").read_text() == "| fake table |\n"
    assert (out / "bench_postprocessing.out").read_text() == "| clean |\n"
    for name in ("bench_submission.json", "efficiency.csv", "results.tgz", "data.log", "evaluation_run.log"):
        assert (out / name).is_file(), name
    assert not (out / "failed.txt").exists()
    assert "packed before" in (tmp_path / "calls.txt").read_text()


def test_a_failed_gpu_session_step_lets_the_others_run_and_the_exit_status_says_so(tmp_path):
    done = run_script("gpu_session.sh", tmp_path, "out", FAIL="bench.bench_submission")
    assert done.returncode == 1
    out = tmp_path / "out"
    assert (out / "failed.txt").read_text().startswith("bench_submission: exit 3")
    assert "fake failure" in (out / "bench_submission.log").read_text()
    assert (out / "efficiency.csv").is_file() and (out / "results.tgz").is_file()  # the steps after it ran
    assert (out / "bench_postprocessing.out").is_file()
    assert "pack" not in (out / "failed.txt").read_text()  # what the failed step did not leave is not packed


@pytest.mark.parametrize("script", ["gpu_session.sh", "gpu_train.sh"])
def test_the_gpu_scripts_stop_at_once_without_a_cuda_gpu(script, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "DEVICE": "cuda"}
    done = subprocess.run(["sh", str(ROOT / "bench" / script), str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: DEVICE=cuda, but torch sees no CUDA GPU"


def test_the_gpu_training_defaults_fit_a_ten_minute_command():
    text = (ROOT / "bench" / "gpu_train.sh").read_text()
    assert re.search(r'^minutes="\$\{MINUTES:-5\}"$', text, re.MULTILINE)
    assert re.search(r'^test_cases="\$\{TEST_CASES:-0\}"$', text, re.MULTILINE)


def test_a_failed_training_stage_keeps_the_other_stages_weights_and_fails_the_script(tmp_path):
    done = run_script("gpu_train.sh", tmp_path, "rel/out", NO_WEIGHTS="fine", MINUTES="0.1")
    assert done.returncode == 1
    out = tmp_path / "rel" / "out"
    parts = sorted(out.glob("best-coarse.pt.part-*"))
    assert parts and b"".join(p.read_bytes() for p in parts) == b"weights of coarse"
    assert not list(out.glob("best-fine.pt.part-*")) and not list(out.glob("gpu_c2f.pt.part-*"))
    assert "fine: exit 4" in (out / "summary.md").read_text()


def test_the_gpu_training_writes_both_stages_and_the_joined_checkpoint(tmp_path):
    done = run_script("gpu_train.sh", tmp_path, "out", MINUTES="0.1")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert b"".join(p.read_bytes() for p in sorted(out.glob("gpu_c2f.pt.part-*"))) == b"combined"
    for stage in ("coarse", "fine"):
        assert b"".join(p.read_bytes() for p in sorted(out.glob(f"best-{stage}.pt.part-*"))) == f"weights of {stage}".encode()


def test_a_gpu_session_step_past_its_time_limit_is_stopped_and_named(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexec sleep 60\n")  # a step that hangs: limit 10 s
    (bin_dir / "nvidia-smi").chmod(0o755)
    done = run_script("gpu_session.sh", tmp_path, "out", DEVICE="cuda", PATH=f"{bin_dir}:/usr/bin:/bin")
    assert done.returncode == 1
    out = tmp_path / "out"
    assert (out / "failed.txt").read_text().splitlines() == ["nvidia-smi: out of time after 10 s (see nvidia-smi.log)"]
    assert (out / "results.tgz").is_file() and (out / "bench_postprocessing.out").is_file()
