"""bench/gpu_train.sh runs on a machine lent for minutes: its default mix of phantom variations must
parse as training.phantom options, and hold every variation the shipped weights' fine stage last
met (training/demo_weights.sh), so that a GPU run starts from no less than the CPU one did."""
import re
import shlex
import subprocess
from pathlib import Path

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
    """`sh -n` on each: a syntax error found on the GPU machine costs the time it is lent for."""
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
