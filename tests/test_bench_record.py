"""What every benchmark records and checks before it measures: the machine beside its numbers, its
docs section's markers, its arguments, and a failed child process in one line (never timed here)."""
import json
import os
import subprocess
import sys

import pytest

from bench import bench_networks, bench_postprocessing, bench_training, record, sampler_overhead, startup
from inference.defaults import DEFAULT_WEIGHTS


@pytest.mark.parametrize("doc", ["<!-- a:start -->\nold\n", "old\n<!-- a:end -->\n",
                                 "<!-- a:end -->\n<!-- a:start -->\n", "<!-- a:start -->\n<!-- a:end -->\n<!-- a:start -->"])
def test_a_section_whose_markers_do_not_pair_up_is_found(doc):
    assert "<!-- a:start -->" in record.section_problem(doc)
    assert record.section_problem("# B\n<!-- a:start -->\nx\n<!-- a:end -->\n<!-- b:start -->\n<!-- b:end -->\n") is None


def test_broken_markers_stop_a_benchmark_in_one_line_and_writing_into_them_is_refused(tmp_path, monkeypatch, capsys):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# B\n<!-- x:start -->\nold\n")
    monkeypatch.setattr(record, "DOCS", docs)
    with pytest.raises(SystemExit) as exit_:
        record.require_docs_sections()
    assert exit_.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="x:end"):
        record.write_section("x", "X", "new")
    with pytest.raises(SystemExit) as exit_:
        record.publish({"a": 1}, tmp_path / "result.json", "table", ("x", "X"))
    assert exit_.value.code == 1 and json.loads((tmp_path / "result.json").read_text()) == {"a": 1}
    assert docs.read_text() == "# B\n<!-- x:start -->\nold\n"


def test_a_child_killed_without_a_word_is_described_by_its_signal():
    assert record.exit_description(3) == "exit code 3"
    assert record.exit_description(-9) == "killed by SIGKILL (out of memory?)"
    assert record.exit_description(-11) == "killed by SIGSEGV"


def test_the_training_benchmark_reports_a_child_killed_without_stderr(monkeypatch, capsys):
    killed = subprocess.CompletedProcess([], -9, stdout="", stderr="")
    monkeypatch.setattr(bench_training.subprocess, "run", lambda *a, **k: killed)
    assert bench_training.main(["--stages", "coarse", "--sides", "32", "--precisions", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "coarse 32 fp32: killed by SIGKILL (out of memory?)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("main,args", [(bench_training.main, ["--steps", "1"]), (bench_networks.main, ["--repeats", "0"]),
                                       (bench_postprocessing.main, ["--repeats", "0"]), (startup.main, ["--repeats", "0"]),
                                       (startup.main, ["--weights", "no-such-weights.pt"])])
def test_counts_a_median_cannot_be_taken_of_are_refused_in_one_line(main, args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and args[-1] in err and "Traceback" not in err


def test_the_post_processing_benchmark_names_its_machine_and_the_flare21_organs(capsys):
    assert bench_postprocessing.NAMES == {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
    assert bench_postprocessing.main(["--shape", "48", "48", "24", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "flags:" in out and "NumPy" in out and "| clean |" in out


def test_the_sampler_benchmark_records_its_machine(capsys):
    assert sampler_overhead.main(["--seconds", "0.25", "--gpu", "99"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "flags:" in result["machine"] and result["samples"] >= 1


def test_start_up_is_measured_with_the_shipped_weights_from_any_folder(tmp_path):
    assert DEFAULT_WEIGHTS.is_file()
    env = {**os.environ, "PYTHONPATH": str(startup.ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.startup", "--repeats", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "flags:" in done.stdout and "| submission imports |" in done.stdout
