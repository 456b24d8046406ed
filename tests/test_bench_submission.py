"""The submission benchmark runs end to end and its figures hold together (never timed here)."""
import json

import pytest

from bench import bench_submission, record
from inference.checkpoint import load
from inference.pipeline import STAGES


def test_benchmark_times_each_stage_of_each_case_and_writes_its_section(tmp_path, weights, monkeypatch, capsys):
    monkeypatch.setattr(bench_submission, "PAPER_SIZES", {"coarse": (32, 32, 32), "fine": (32, 32, 32)})
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept\n")
    monkeypatch.setattr(record, "DOCS", docs)
    out = tmp_path / "bench"
    code = bench_submission.main(["--weights", str(weights), "--sizes", "32", "48", "--shapes", "64x56x24",
                                  "--real", "--precision", "bf16", "--backend", "torch", "--repeats", "1",
                                  "--out", str(out), "--write-docs"])
    assert code == 0
    result = json.loads((out / "bench_submission.json").read_text())
    assert result["sizes"] == {"coarse": "32x32x32", "fine": "48x48x48"}
    assert load(out / "weights.pt").fine.config.input_size == (48, 48, 48)
    (cold,), (warm,) = result["cold"], result["warm"]
    assert cold["shape"] == [64, 56, 24] and cold["peak_rss_mb"] > 0
    parts = {k: cold["seconds"][k] for k in (*bench_submission.STARTUP, *bench_submission.CASE_STAGES)}
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) <= cold["wall_s"]  # the parts of one process's wall time
    assert set(warm["seconds"]) == set(STAGES)
    assert set(warm["dsc_vs_fp32"]) == {"liver", "kidney", "spleen", "pancreas"}  # bf16 against fp32
    text = docs.read_text()
    assert "kept" in text and "<!-- submission-cpu-torch:start -->" in text and "phantom_64x56x24_0000.nii.gz" in text
    assert str(out) not in text and "--write-docs" in text  # the command, without the work folder
    assert "Yardstick" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--shapes", "512x512"], ["--shapes", "axbxc"], ["--shapes", "8x512x512"],
                                  ["--sizes", "160", "200"], ["--sizes", "160"]])
def test_bad_arguments_are_refused_in_one_line(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_submission.main(args)
    assert exit_.value.code == 2 and args[-1] in capsys.readouterr().err
