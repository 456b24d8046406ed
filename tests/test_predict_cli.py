"""The submission's command as a user meets it: path problems before any model is loaded, progress
per stage, a single file, --continue, Ctrl-C, weights errors that say how to get weights."""
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from flare_common import cli
from flare_common.errors import InputError
from flare_common.nifti import MISCASED
from inference import predict
from inference.checkpoint import random_models, save
from inference.imageio import read_ct, write_labels
from inference.networks import CoarseConfig, FineConfig
from inference.predict import Progress, Reader, main
from tests.test_predict import synthetic_ct

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINES = ["reading", "coarse stage", "fine stage", "post-processing", "writing"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """A folder of two small synthetic CTs and a note."""
    folder = tmp_path_factory.mktemp("scans")
    synthetic_ct(folder, "alpha_0000.nii.gz", seed=1)
    synthetic_ct(folder, "beta_0000.nii.gz", seed=2)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def read_only_folder(tmp_path) -> Path:
    """An existing folder in which no file can be created: mode 0555 for a normal user; for root,
    whom permissions do not stop, the kernel's /sys."""
    folder = Path("/sys") if os.geteuid() == 0 else tmp_path / "read-only"
    if folder != Path("/sys"):
        folder.mkdir()
        folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        yield folder
    else:
        (folder / "probe").unlink()
        pytest.skip(f"no read-only folder here ({folder} is writable)")
    finally:
        if folder != Path("/sys"):
            folder.chmod(0o755)


def test_path_problems_end_at_once_with_one_line_and_no_torch(tmp_path, scans, weights, read_only_folder):
    """Each path problem: exit code 2, one line naming the path, before torch is imported and
    before anything is written."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    out, good = str(tmp_path / "out"), ["--weights", str(weights)]
    file, empty, report_dir = tmp_path / "a-file", tmp_path / "empty", tmp_path / "empty"
    cases = {  # what the line says: (arguments, the path it names)
        "no such file or folder": (["-i", str(tmp_path / "missing"), "-o", out, *good], tmp_path / "missing"),
        "no .nii.gz or .nii files": (["-i", str(empty), "-o", out, *good], empty),
        "not a .nii.gz or .nii file": (["-i", str(scans / "notes.txt"), "-o", out, *good], scans / "notes.txt"),
        "exists and is not a folder": (["-i", str(scans), "-o", str(file), *good], file),
        "cannot create the folder": (["-i", str(scans), "-o", str(file / "out"), *good], file / "out"),
        "not writable": (["-i", str(scans), "-o", str(read_only_folder), *good], read_only_folder),
        "is a folder": (["-i", str(scans), "-o", out, "--report", str(report_dir), *good], report_dir),
        "its folder": (["-i", str(scans), "-o", out, "--report", str(file / "r.json"), *good], file / "r.json"),
        "weights file not found": (["-i", str(scans), "-o", out, "--weights", str(tmp_path / "none.pt")],
                                   tmp_path / "none.pt"),
    }
    code = ("import contextlib, io, json, sys\nfrom inference.predict import main\nresults = {}\n"
            "for key, argv in json.loads(sys.argv[1]).items():\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n        status = main(argv)\n"
            "    results[key] = [status, err.getvalue(), 'torch' in sys.modules]\n"
            "print(json.dumps(results))")
    argvs = json.dumps({key: argv for key, (argv, _) in cases.items()})
    done = subprocess.run([sys.executable, "-c", code, argvs], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert sorted(results) == sorted(cases)
    for key, (status, err, torch_loaded) in results.items():
        lines = err.splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], (key, err)
        assert str(cases[key][1]) in lines[0] and ".partial" not in err and not torch_loaded, (key, err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    missing = results["weights file not found"][1]
    assert "weights/flare21_c2f.pt" in missing and "flare-train" in missing  # how to get weights


@pytest.mark.parametrize("payload", ["object", "bytes"])
def test_a_file_that_is_not_a_checkpoint_says_how_to_get_weights(tmp_path, scans, payload, capsys):
    """Never torch's advice to load with weights_only=False (unsafe): one line, exit code 2."""
    bad = tmp_path / "bad.pt"
    if payload == "object":
        torch.save({"format": "flare-coarse-to-fine/2", "model": Progress}, bad)  # a class: not a plain value
    else:
        bad.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    assert main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(bad) in errors[0], err
    assert "weights_only" not in err and "weights/flare21_c2f.pt" in errors[0]
    assert not list((tmp_path / "out").iterdir())


def test_progress_names_each_stage_in_plain_lines_off_a_terminal(tmp_path, scans, weights, capsys):
    assert main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(weights)]) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert progress == [f"[{i}/2] {name}_0000.nii.gz: {stage}" for i, name in ((1, "alpha"), (2, "beta"))
                        for stage in STAGE_LINES]
    assert "notes.txt" in captured.err  # ignored, and said so
    assert [line.split(":")[0] for line in captured.out.splitlines()] == ["alpha_0000.nii.gz -> alpha.nii.gz",
                                                                          "beta_0000.nii.gz -> beta.nii.gz"]


def test_progress_on_a_terminal_is_one_bar_naming_the_case_and_stage():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(2, screen)
    progress.start("alpha_0000.nii.gz")
    progress.stage("fine")
    progress.done()
    progress.close()
    text = screen.getvalue()
    assert "[1/2] alpha_0000.nii.gz: fine stage" in text and "1/2" in text and "\n[1/2]" not in text


def test_a_single_file_and_continue(tmp_path, scans, weights, capsys):
    out = tmp_path / "out"
    assert main(["-i", str(scans / "beta_0000.nii.gz"), "-o", str(out), "--weights", str(weights)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["beta.nii.gz"]
    before = (out / "beta.nii.gz").read_bytes()
    (out / "beta.nii.gz").write_bytes(before)  # the same bytes, a new modification time
    stamp = (out / "beta.nii.gz").stat().st_mtime_ns
    capsys.readouterr()

    report = tmp_path / "report.json"
    assert main(["-i", str(scans), "-o", str(out), "--weights", str(weights), "--continue", "--report", str(report)]) == 0
    err = capsys.readouterr().err
    assert "1 case(s) already written" in err and "[1/1] alpha_0000.nii.gz: reading" in err and "beta_0000" not in err
    assert (out / "beta.nii.gz").stat().st_mtime_ns == stamp  # not written again
    assert sorted(p.name for p in out.iterdir()) == ["alpha.nii.gz", "beta.nii.gz"]
    statuses = {case["input"]: case["status"] for case in json.loads(report.read_text())["cases"]}
    assert statuses == {"alpha_0000.nii.gz": "ok", "beta_0000.nii.gz": "skipped"}

    assert main(["-i", str(scans), "-o", str(out), "--weights", str(weights), "--continue", "--report", str(report)]) == 0
    assert "nothing to do" in capsys.readouterr().err
    statuses = {case["input"]: case["status"] for case in json.loads(report.read_text())["cases"]}
    assert statuses == {"alpha_0000.nii.gz": "skipped", "beta_0000.nii.gz": "skipped"}  # this run's, not the last


def test_an_input_is_never_overwritten_by_its_output(tmp_path, weights, capsys):
    synthetic_ct(tmp_path, "plain.nii.gz")  # no _0000: its output name is its own name
    before = (tmp_path / "plain.nii.gz").read_bytes()
    assert main(["-i", str(tmp_path / "plain.nii.gz"), "-o", str(tmp_path), "--weights", str(weights)]) == 1
    assert "would overwrite it" in capsys.readouterr().err
    assert (tmp_path / "plain.nii.gz").read_bytes() == before


def test_a_ct_beside_the_one_input_is_never_overwritten_but_an_earlier_output_is(tmp_path, weights, capsys):
    """-i one file, -o its folder: a CT there named as the output stays (one line, exit 1); a
    label map there (an earlier run's output) is written again."""
    synthetic_ct(tmp_path, "case_0000.nii.gz")
    synthetic_ct(tmp_path, "case.nii.gz")  # another CT, named as case_0000's output
    before = (tmp_path / "case.nii.gz").read_bytes()
    assert main(["-i", str(tmp_path / "case_0000.nii.gz"), "-o", str(tmp_path), "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert f"its output case.nii.gz would overwrite {tmp_path / 'case.nii.gz'}, no label map (" in err
    assert (tmp_path / "case.nii.gz").read_bytes() == before
    (tmp_path / "case.nii.gz").unlink()
    assert main(["-i", str(tmp_path / "case_0000.nii.gz"), "-o", str(tmp_path), "--weights", str(weights)]) == 0
    assert main(["-i", str(tmp_path / "case_0000.nii.gz"), "-o", str(tmp_path), "--weights", str(weights)]) == 0
    written = nib.load(tmp_path / "case.nii.gz")  # an earlier label map stored as int16 or float: written again
    for dtype in (np.int16, np.float32):
        nib.save(nib.Nifti1Image(np.asarray(written.dataobj).astype(dtype), written.affine), tmp_path / "case.nii.gz")
        assert main(["-i", str(tmp_path / "case_0000.nii.gz"), "-o", str(tmp_path), "--weights", str(weights)]) == 0
        assert nib.load(tmp_path / "case.nii.gz").get_data_dtype() == np.uint8


def test_an_unreadable_input_folder_is_a_usage_error(tmp_path, weights, capsys, monkeypatch):
    """A folder that cannot be listed (no permission) is the user's to fix: exit 2, one line."""
    def refused(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(predict, "nifti_files", refused)
    assert main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--weights", str(weights)]) == 2
    assert capsys.readouterr().err.strip() == f"error: -i {tmp_path}: Permission denied"


def test_no_input_is_overwritten_by_another_inputs_output(tmp_path, weights, capsys):
    """scan.nii's output is scan.nii.gz: into the inputs' own folder that would overwrite the input
    of that name (and each run's outputs would be the next run's inputs), so that -o is refused;
    written where the inputs are linked from, neither is segmented; the inputs stay as they were."""
    synthetic_ct(tmp_path, "scan.nii.gz")
    nib.save(nib.load(tmp_path / "scan.nii.gz"), tmp_path / "scan.nii")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["-i", str(tmp_path), "-o", str(tmp_path), "--weights", str(weights)]) == 2
    assert "the input folder itself" in capsys.readouterr().err
    links = tmp_path / "links"
    links.mkdir()
    for name in before:
        (links / name).symlink_to(tmp_path / name)
    assert main(["-i", str(links), "-o", str(tmp_path), "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "scan.nii: its output scan.nii.gz would overwrite the input scan.nii.gz" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_closed_stdout_loses_the_summary_line_not_the_case(tmp_path, scans, weights, monkeypatch):
    """stdout a pipe whose reader has gone: the case is written and reported written."""
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    report = tmp_path / "r.json"
    assert main(["-i", str(scans / "alpha_0000.nii.gz"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--report", str(report)]) == 0
    assert (tmp_path / "out" / "alpha.nii.gz").is_file()
    assert [c["status"] for c in json.loads(report.read_text())["cases"]] == ["ok"]


def test_the_reader_reads_one_case_ahead_and_a_bad_file_fails_alone(tmp_path, scans):
    bad = tmp_path / "bad_0000.nii.gz"
    bad.write_bytes(b"not a NIfTI file")
    paths = [scans / "alpha_0000.nii.gz", bad, scans / "beta_0000.nii.gz"]
    with Reader(paths) as reader:
        assert set(reader.pending) == {0}  # the first starts at once, beside start-up
        ct, read_s, waited = reader.get(paths[0])
        np.testing.assert_array_equal(ct.data, read_ct(paths[0]).data)
        assert read_s >= ct.reorient_s >= 0 and waited >= 0
        assert set(reader.pending) == {1}  # the next one is under way, and only it
        with pytest.raises(InputError, match=r"not a NIfTI-1 or NIfTI-2 file \(not gzip-compressed, though its name"):
            reader.get(bad)
        assert reader.get(paths[2])[0].data.shape == read_ct(paths[2]).data.shape
        assert not reader.pending


def test_an_interrupted_write_leaves_no_file(tmp_path, scans, monkeypatch):
    ct = read_ct(scans / "alpha_0000.nii.gz")

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_labels(ct.data.astype("uint8") * 0, ct, tmp_path / "alpha.nii.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("stop", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_sigterm_ends_with_one_line_and_no_partial_file(tmp_path, scans, weights, stop, code, word):
    """SIGINT (Ctrl-C) or SIGTERM (docker stop) during the second case: the first stays written,
    nothing else is, one line (no traceback), exit code 130 or 143; --continue then does the rest."""
    slow = tmp_path / "slow.pt"  # the paper's widths at 96^3: seconds per stage on a CPU, time to interrupt
    save(slow, random_models(coarse=CoarseConfig(input_size=(96, 96, 96)), fine=FineConfig(input_size=(96, 96, 96))))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "inference.predict", "-i", str(scans), "-o", str(out), "--device", "cpu"]
    proc = subprocess.Popen(argv + ["--weights", str(slow)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[2/2] beta_0000.nii.gz: coarse stage"):
            proc.send_signal(stop)
            break
    _, rest = proc.communicate(timeout=600)
    err = "".join(seen) + rest
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].startswith(f"{word}: 1 case(s) written")
    assert sorted(p.name for p in out.iterdir()) == ["alpha.nii.gz"]
    assert nib.load(out / "alpha.nii.gz").shape == nib.load(scans / "alpha_0000.nii.gz").shape

    done = subprocess.run(argv + ["--weights", str(weights), "--continue"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "1 case(s) already written" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alpha.nii.gz", "beta.nii.gz"]


def test_a_broken_link_among_the_inputs_is_a_failed_case_naming_it(tmp_path, scans, weights, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "alpha_0000.nii.gz").write_bytes((scans / "alpha_0000.nii.gz").read_bytes())
    (inputs / "gone_0000.nii.gz").symlink_to(tmp_path / "moved_0000.nii.gz")
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "error: gone_0000.nii.gz: unreadable" in err and "1 of 2 case(s) written" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha.nii.gz"]


def test_hidden_files_are_not_cases(tmp_path, scans, weights, capsys):
    """macOS's ._<name> files beside each case (on a disk it copied to) are ignored with the
    notice, not segmented; a folder of hidden files only has no images."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for source in scans.iterdir():
        (inputs / source.name).write_bytes(source.read_bytes())
        (inputs / f"._{source.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--weights", str(weights)]) == 0
    err = capsys.readouterr().err
    notice = next(line for line in err.splitlines() if line.startswith("notice: ignoring"))
    assert "._alpha_0000.nii.gz" in notice and "._beta_0000.nii.gz" in notice and "notes.txt" in notice
    assert "[1/2] alpha_0000.nii.gz: reading" in err and "error" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha.nii.gz", "beta.nii.gz"]

    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "._case_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    assert main(["-i", str(hidden), "-o", str(tmp_path / "out2"), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no .nii.gz or .nii files" in err[0] and "._case_0000.nii.gz" in err[0]


def test_upper_case_nifti_names_are_named_apart_from_other_files(tmp_path, scans, weights, capsys):
    """A CT named CASE_0000.NII.GZ is not read (the organisers' scripts match lower-case names): a
    case that fails, saying why; a folder of such files only is an error naming them."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "alpha_0000.nii.gz").write_bytes((scans / "alpha_0000.nii.gz").read_bytes())
    (inputs / "BETA_0000.NII.GZ").write_bytes((scans / "beta_0000.nii.gz").read_bytes())
    (inputs / "deeper").mkdir()  # a subfolder is named too: its CTs are not read
    (inputs / "deeper" / "gamma_0000.nii.gz").write_bytes((scans / "beta_0000.nii.gz").read_bytes())
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert f"error: BETA_0000.NII.GZ: {MISCASED}" in err and "1 of 2 case(s) written" in err
    assert "notice: ignoring 1 item(s) that are hidden, not NIfTI or subfolders: deeper/" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha.nii.gz"]

    (inputs / "alpha_0000.nii.gz").unlink()
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out2"), "--weights", str(weights)]) == 2
    assert f"no .nii.gz or .nii files in this folder (BETA_0000.NII.GZ: {MISCASED})" in capsys.readouterr().err


def test_continue_never_skips_an_output_whose_name_is_contested(tmp_path, weights, capsys):
    """--continue: an 'output' that is an input is no output, and an output two inputs claim
    (a.nii and a.nii.gz) may be either's: neither is skipped; the clashing input fails."""
    folder = tmp_path / "d"
    folder.mkdir()
    synthetic_ct(folder, "scan.nii.gz")
    before = (folder / "scan.nii.gz").read_bytes()
    assert main(["-i", str(folder / "scan.nii.gz"), "-o", str(folder), "--weights", str(weights), "--continue"]) == 1
    err = capsys.readouterr().err
    assert "error: scan.nii.gz: its output scan.nii.gz would overwrite it" in err and "nothing to do" not in err
    assert (folder / "scan.nii.gz").read_bytes() == before

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    synthetic_ct(inputs, "a.nii.gz")
    nib.save(nib.load(inputs / "a.nii.gz"), inputs / "a.nii")
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"an earlier run's output, of a.nii or of a.nii.gz")
    assert main(["-i", str(inputs), "-o", str(out), "--weights", str(weights), "--continue"]) == 1
    err = capsys.readouterr().err
    assert "already written" not in err and "error: a.nii.gz: another input already writes a.nii.gz" in err
    assert nib.load(out / "a.nii.gz").shape == nib.load(inputs / "a.nii").shape  # a.nii segmented again


def _second_case_stops(monkeypatch, stop: type[BaseException]) -> None:
    """segment_case raises `stop` on its second call (as Ctrl-C or SIGTERM would there)."""
    import inference.predict as predict

    calls, real = [], predict.segment_case

    def segment_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise stop
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "segment_case", segment_case)


@pytest.mark.parametrize(("stop", "code", "word"), [(KeyboardInterrupt, 130, "interrupted"),
                                                     ("Terminated", 143, "terminated")])
def test_a_stopped_run_s_report_holds_every_finished_case(tmp_path, scans, weights, monkeypatch, capsys, stop, code,
                                                         word):
    _second_case_stops(monkeypatch, cli.Terminated if stop == "Terminated" else stop)
    report = tmp_path / "report.json"
    assert main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(weights), "--report", str(report)]) == code
    assert capsys.readouterr().err.rstrip().splitlines()[-1].startswith(f"{word}: 1 case(s) written")
    written = json.loads(report.read_text())
    assert [(c["input"], c["status"]) for c in written["cases"]] == [("alpha_0000.nii.gz", "ok")]
    assert written["cases"][0]["seconds"]["total"] > 0 and written["device_type"] == "cpu"
    assert (written["complete"], written["stopped"], written["failed"]) == (False, word, 0)


def test_the_report_is_rewritten_after_each_case(tmp_path, scans, weights, monkeypatch):
    import inference.predict as predict

    seen, real = [], predict.write_atomic

    def write_atomic(path, text):
        seen.append(json.loads(text))
        real(path, text)

    monkeypatch.setattr(predict, "write_atomic", write_atomic)
    report = tmp_path / "report.json"
    assert main(["-i", str(scans), "-o", str(tmp_path / "out"), "--weights", str(weights), "--report", str(report)]) == 0
    both = ["alpha_0000.nii.gz", "beta_0000.nii.gz"]
    assert [[c["input"] for c in doc["cases"]] for doc in seen] == [both[:1], both, both]  # each case, then the end
    assert [doc["complete"] for doc in seen] == [False, False, True] and json.loads(report.read_text()) == seen[-1]


@pytest.mark.parametrize("nothing_to_do", [False, True])
def test_a_report_that_cannot_be_written_is_one_line_and_exit_code_1(tmp_path, scans, weights, monkeypatch, capsys,
                                                                    nothing_to_do):
    """A full disk under the report: one line naming it (once), every case still written, the
    summary line still said, exit code 1; no traceback."""
    import inference.predict as predict

    def full(path, text):
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    if nothing_to_do:
        assert main(["-i", str(scans), "-o", str(out), "--weights", str(weights)]) == 0
        capsys.readouterr()
    monkeypatch.setattr(predict, "write_atomic", full)
    report = tmp_path / "report.json"
    argv = ["-i", str(scans), "-o", str(out), "--weights", str(weights), "--report", str(report), "--continue"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        f"error: --report {report}: No space left on device"]
    assert "Traceback" not in err and not report.exists()
    assert sorted(p.name for p in out.iterdir()) == ["alpha.nii.gz", "beta.nii.gz"]
    assert ("nothing to do" if nothing_to_do else "2 of 2 case(s) written") in err


def test_without_proc_or_psutil_the_process_age_is_unknown_not_fatal(tmp_path, scans, weights, monkeypatch):
    """The process's age feeds one report field: without /proc (not Linux) and without psutil
    (not in the submission's requirements) it is null, and the run goes on."""
    import inference.predict as predict

    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil fails
    assert predict._process_age_s(tmp_path / "no-proc" / "stat") is None
    monkeypatch.setattr(predict, "PROC_STAT", tmp_path / "no-proc" / "stat")
    report = tmp_path / "report.json"
    assert main(["-i", str(scans / "alpha_0000.nii.gz"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["startup_s"]["process"] is None
    if Path("/proc/self/stat").exists():  # Linux: to the clock tick, without psutil
        assert 0 < predict._process_age_s(Path("/proc/self/stat")) < 24 * 3600


def test_the_progress_names_every_step_the_pipeline_times():
    """Every timed step of a case (inference.pipeline.STAGES) and reading and writing has its
    words: none is dropped silently, and each of the five is said once, as its first step starts."""
    from inference.pipeline import STAGES
    from inference.predict import PROGRESS

    assert set(PROGRESS) == {"read", *STAGES, "write"}
    assert list(dict.fromkeys(PROGRESS.values())) == STAGE_LINES
    stream = io.StringIO()
    progress = Progress(1, stream)
    progress.start("a_0000.nii.gz")
    for step in (*STAGES, "write", "a step of the future"):
        progress.stage(step)
    said = [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]
    assert said == [*STAGE_LINES, "a step of the future"]
    assert PROGRESS["logits back"] == "post-processing"


def test_the_help_names_the_labels_of_the_label_table(monkeypatch):
    import inference.predict as predict
    from flare_common.labels import label_names

    description = predict.build_parser().description
    assert all(f"{label} {name}" in description for label, name in label_names("flare21").items())
    monkeypatch.setattr(predict, "label_names", lambda year: {1: "the one organ"})
    assert "1 the one organ" in predict.build_parser().description


def test_the_docstring_states_every_exit_code():
    import inference.predict as predict

    text = " ".join(predict.__doc__.split())
    for code, meaning in ((0, "every case written"), (1, "some cases failed"), (2, "usage error"),
                          (130, "interrupted"), (143, "terminated")):
        assert f"{code} {meaning}" in text, code
    assert cli.Terminated.EXIT_CODE == 143
