"""The scorer's benchmark: each command timed on its own, medians over runs taking turns, and the
scorer's numbers checked against the organisers' loop."""
import pytest

pytest.importorskip("surface_distance", reason="surface-distance is in requirements-dev.txt")

from bench.bench_score import main  # noqa: E402


def test_bench_score_reports_medians_and_the_same_numbers_as_the_official_loop(tmp_path, capsys):
    assert main(["--cases", "1", "--shape", "64", "64", "32", "--spacing", "2", "2", "3", "--quality", "good",
                 "--workers", "2", "--repeats", "2", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "medians of 2 runs each" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| good")]
    header = next(line for line in out.splitlines() if line.startswith("| quality")).split("|")[1:-1]
    table = [dict(zip((h.strip() for h in header), (c.strip() for c in row))) for row in rows]
    assert [r["run"] for r in table] == ["official loop (surface-distance)", "evaluation.score --workers 1",
                                         "evaluation.score --workers 2"]
    for row in table:
        low, high = (float(v) for v in row["range_s"].split("-"))
        assert low <= float(row["seconds"]) <= high and float(row["peak_MB"]) > 0
        assert float(row["max_abs_diff"]) < 1e-9
