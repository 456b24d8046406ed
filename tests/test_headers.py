"""Broken header geometry and broken gzip streams are refused, naming the case, by the scorer and by
predict; nibabel's repairs never pass silently and its messages never reach stderr unnamed."""
import gzip
import itertools
import logging
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluation.imageio import read_label_runs, read_labels
from evaluation.runs import label_runs
from evaluation.score import main as score_main
from evaluation.score import score_files
from flare_common.errors import InputError
from flare_common.nifti import SPACING_RANGE_MM
from inference.imageio import read_ct

SHAPE = (6, 5, 4)
AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0, 20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
DATA = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 5).astype(np.int16)
QUATERNION = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
SROWS = tuple(f"srow_{axis}[{i}]" for axis in "xyz" for i in range(4))
FIELDS = ("pixdim[1]", "pixdim[2]", "pixdim[3]", *QUATERNION, *SROWS)
names = itertools.count()


def header_bytes(mutations: list[tuple[str, float]], qform_code: int = 1, sform_code: int = 1) -> bytes:
    """A small valid image (int16, both qform and sform set) with header fields changed as stored."""
    image = nib.Nifti1Image(DATA, AFFINE)
    image.header.set_qform(AFFINE, code=1)
    image.header.set_sform(AFFINE, code=1)
    raw = bytearray(image.to_bytes())
    header = nib.Nifti1Header(bytes(raw[:348]), check=False)
    header["qform_code"], header["sform_code"] = qform_code, sform_code
    for field, value in mutations:
        name, index = (field[:-3], int(field[-2])) if field.endswith("]") else (field, None)
        if index is None:
            header[name] = value
        else:
            values = header[name].copy()
            values[index] = value
            header[name] = values
    raw[:348] = header.binaryblock
    return bytes(raw)


def write(folder: Path, data: bytes, name: str | None = None) -> Path:
    path = folder / (name or f"case_{next(names)}.nii.gz")
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.name.endswith(".gz") else data)
    return path


class Spy(logging.Handler):
    """Records what reaches nibabel's own logger handlers (its stderr output)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


@pytest.fixture(scope="module")
def spy():
    handler = Spy()
    nib.imageglobals.logger.addHandler(handler)
    yield handler
    nib.imageglobals.logger.removeHandler(handler)


def must_refuse(mutations: list[tuple[str, float]], qform_code: int, sform_code: int, pixdim_spacing: bool) -> bool:
    """What an organiser knows is broken, independently of the code under test, for a reader
    that takes the spacing from pixdim (pixdim_spacing) or from the affine alone."""
    low, high = SPACING_RANGE_MM
    for field, value in dict(mutations).items():  # the last change of a field stands
        stored = float(np.float32(value))
        pixdim_in_use = pixdim_spacing or sform_code == 0  # without an sform the affine is made from pixdim
        if field.startswith("pixdim") and pixdim_in_use and not (np.isfinite(stored) and low <= stored <= high):
            return True
        # the sform is the affine where its code says so, else the qform where its code does
        in_use = (field in QUATERNION and qform_code > 0 and sform_code == 0) or (field in SROWS and sform_code > 0)
        if in_use and not np.isfinite(stored):
            return True
    return False


def assert_sane(volume_spacing, affine, data):
    low, high = SPACING_RANGE_MM
    assert all(np.isfinite(s) and low <= s <= high for s in volume_spacing)
    assert np.isfinite(affine).all()
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    assert ((sizes >= low) & (sizes <= high)).all()
    assert sorted(data.shape[:3]) == sorted(SHAPE)  # predict's CT comes reoriented


def assert_same_runs(runs, data):
    """runs (read from a file, so in NIfTI's memory order) are data's."""
    want = label_runs(np.asfortranarray(data))
    assert runs.shape == want.shape and runs.fortran
    for got, expected in ((runs.starts, want.starts), (runs.ends, want.ends), (runs.values, want.values)):
        np.testing.assert_array_equal(got, expected)


value = st.one_of(st.sampled_from([0.0, -0.0, -1.0, -2.5, np.nan, np.inf, -np.inf, 1e30, 1e-30, 0.01, 60.0, 1e6]),
                  st.floats(0.05, 50), st.floats(-1, 1), st.floats(width=32))
mutation = st.tuples(st.sampled_from(FIELDS), value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, max_size=3), st.sampled_from([0, 1, 2]), st.sampled_from([0, 1, 2]))
def test_header_mutations_are_refused_or_read_soundly_by_both_tools(tmp_path_factory, spy, mutations, qform_code,
                                                                   sform_code):
    folder = tmp_path_factory.getbasetemp()
    path = write(folder, header_bytes(mutations, qform_code, sform_code))
    outcomes = []
    for reader in (read_labels, read_ct, read_label_runs):
        try:
            result = reader(path)
        except InputError as exc:
            outcomes.append(str(exc))
            continue
        outcomes.append(None)
        if reader is read_labels:
            assert_sane(result.spacing, result.affine, result.data)
            np.testing.assert_array_equal(result.data, DATA)
        elif reader is read_label_runs:
            assert_same_runs(result.runs, DATA)
        else:
            assert_sane(result.spacing, result.image.affine, result.data)
    assert spy.records == []  # nibabel's messages were captured, never printed unnamed
    for outcome, pixdim_spacing in zip(outcomes, (True, False, True)):  # read_ct's spacing is the affine's
        if must_refuse(mutations, qform_code, sform_code, pixdim_spacing):
            assert outcome, outcomes
    final = dict(mutations)
    sane_pixdims_only = all(f.startswith("pixdim") and 0.05 <= np.float32(v) <= 50 for f, v in final.items())
    if sane_pixdims_only and qform_code == sform_code == 0:  # the only geometry is a sound pixdim
        assert outcomes == [None, None, None]
        expected = [0.8, 0.9, 2.5]
        for field, v in final.items():
            expected[int(field[-2]) - 1] = v
        assert read_labels(path).spacing == tuple(float(np.float32(v)) for v in expected)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_flipped_byte_in_the_gzip_stream_is_refused_or_harmless(tmp_path_factory, data):
    """A stream with any one byte changed is either refused or read exactly as the original."""
    original = gzip.compress(header_bytes([]), compresslevel=6, mtime=0)
    position = data.draw(st.integers(0, len(original) - 1))
    flip = data.draw(st.integers(1, 255))
    broken = bytearray(original)
    broken[position] ^= flip
    path = tmp_path_factory.getbasetemp() / f"flip_{next(names)}.nii.gz"
    path.write_bytes(bytes(broken))
    try:  # some changes leave the stream valid and its content intact (a header flag, unused code lengths)
        intact = gzip.decompress(bytes(broken)) == header_bytes([])
    except (OSError, EOFError, zlib.error):
        intact = False
    for reader in (read_labels, read_ct, read_label_runs):
        try:
            result = reader(path)
        except InputError as exc:
            assert str(exc)
            continue
        assert intact, f"byte {position} changed the stream's content and the file was read"
        if reader is read_labels:
            np.testing.assert_array_equal(result.data, DATA)
            np.testing.assert_allclose(result.affine, AFFINE, rtol=1e-6)
        elif reader is read_label_runs:
            assert_same_runs(result.runs, DATA)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_truncated_gzip_stream_is_refused(tmp_path_factory, data):
    original = gzip.compress(header_bytes([]))
    cut = data.draw(st.integers(0, len(original) - 1))
    path = tmp_path_factory.getbasetemp() / f"cut_{next(names)}.nii.gz"
    path.write_bytes(original[:cut])
    for reader in (read_labels, read_ct, read_label_runs):
        with pytest.raises(InputError):
            reader(path)


def test_the_examples_of_the_issue_are_named_problems(tmp_path, spy):
    """pixdim 0 (which nibabel repairs to 1 mm), 1e30 and 1e-30, NaN in the sform or quaternion."""
    cases = {
        "pixdim0": ([("pixdim[1]", 0.0)], 0, 0), "huge": ([("pixdim[3]", 1e30)], 1, 0),
        "tiny": ([("pixdim[2]", 1e-30)], 0, 0), "sform_nan": ([("srow_y[1]", np.nan)], 1, 1),
        "quaternion_nan": ([("quatern_c", np.nan)], 1, 0),
    }
    for name, (mutations, qform, sform) in cases.items():
        path = write(tmp_path, header_bytes(mutations, qform, sform), f"{name}.nii.gz")
        for reader in (read_labels, read_ct):
            with pytest.raises(InputError, match="spacing|sform|quaternion|affine"):
                reader(path)
    assert spy.records == []


def test_the_scorer_refuses_a_broken_ground_truth_and_scores_a_broken_prediction_as_empty(tmp_path, spy, capsys):
    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    gt.mkdir()
    pred.mkdir()
    labels = (DATA % 3).astype(np.uint8)
    good = nib.Nifti1Image(labels, AFFINE)
    for name in ("gt_pixdim0", "pred_huge", "repaired", "clean"):
        nib.save(good, str(gt / f"{name}.nii.gz"))
        nib.save(good, str(pred / f"{name}.nii.gz"))
    image = nib.Nifti1Image(labels, None)
    image.header.set_qform(None, code=0)
    raw = bytearray(image.to_bytes())

    def stored(**fields):
        header = nib.Nifti1Header(bytes(raw[:348]), check=False)
        for key, val in fields.items():
            header[key] = val
        return bytes(header.binaryblock) + bytes(raw[348:])

    write(gt, stored(pixdim=[1, 0, 0.9, 2.5, 1, 1, 1, 1]), "gt_pixdim0.nii.gz")  # nibabel would make it 1 mm
    write(pred, stored(pixdim=[1, 0.8, 0.9, 1e30, 1, 1, 1, 1]), "pred_huge.nii.gz")
    write(pred, stored(pixdim=[1, 0.8, 0.9, 2.5, 1, 1, 1, 1], sform_code=99), "repaired.nii.gz")
    assert score_main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"problem: gt_pixdim0\.nii\.gz: ground truth gt_pixdim0\.nii\.gz: voxel spacing .*not scored", err)
    assert re.search(r"problem: pred_huge\.nii\.gz: prediction pred_huge\.nii\.gz: voxel spacing .*1e\+30.*"
                     r"scored as empty", err)
    assert "warning: repaired.nii.gz: prediction repaired.nii.gz: nibabel: sform_code 99 not valid; setting to 0" in err
    assert not [line for line in err.splitlines() if line.startswith("sform_code")]  # nothing unnamed
    assert spy.records == []
    clean = score_files(gt / "clean.nii.gz", pred / "clean.nii.gz", "flare21")
    assert clean.problems == [] and clean.warnings == []


def test_predict_refuses_broken_geometry_with_one_line_per_case(tmp_path, tiny_networks, capsys, spy):
    from inference.checkpoint import random_models, save
    from inference.predict import main as predict

    weights = tmp_path / "tiny.pt"
    save(weights, random_models(**tiny_networks, seed=3))
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    ct = np.random.default_rng(0).integers(-1000, 400, (24, 20, 12)).astype(np.int16)
    plain = nib.Nifti1Image(ct, None)
    plain.header.set_qform(None, code=0)
    raw = bytearray(plain.to_bytes())
    for name, fields in (("pixdim0", {"pixdim": [1, 0, 4, 8, 1, 1, 1, 1]}),
                         ("huge", {"pixdim": [1, 4, 4, 1e30, 1, 1, 1, 1]}),
                         ("repaired", {"pixdim": [1, 4, 4, 8, 1, 1, 1, 1], "sform_code": 99})):
        header = nib.Nifti1Header(bytes(raw[:348]), check=False)
        for key, val in fields.items():
            header[key] = val
        write(inputs, bytes(header.binaryblock) + bytes(raw[348:]), f"{name}_0000.nii.gz")
    assert predict(["-i", str(inputs), "-o", str(outputs), "--weights", str(weights), "--device", "cpu"]) == 1
    assert sorted(p.name for p in outputs.iterdir()) == ["repaired.nii.gz"]  # segmented, with nibabel's word
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert re.match(r"error: huge_0000\.nii\.gz: voxel spacing \(pixdim\) 4 x 4 x 1e\+30 mm", errors[0])
    assert re.match(r"error: pixdim0_0000\.nii\.gz: voxel spacing \(pixdim\) 0 x 4 x 8 mm", errors[1])
    assert "warning: repaired_0000.nii.gz: nibabel: sform_code 99 not valid; setting to 0" in err
    assert spy.records == []


@pytest.mark.filterwarnings("ignore:the main thread's warning")
def test_messages_of_another_thread_are_not_collected_for_the_file_being_read():
    """A reader thread collects nibabel's messages for its file; a warning or a nibabel log record
    of the main thread in the meantime is not that file's, and a log record goes where it would."""
    import threading
    import warnings

    from flare_common.nifti import nibabel_messages

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    kept: list[str] = []
    logger, keep = nib.imageglobals.logger, Keep()
    logger.addHandler(keep)
    inside, done, caught = threading.Event(), threading.Event(), {}

    def reader() -> None:
        with nibabel_messages() as messages:
            warnings.warn("the reader's own warning", UserWarning, stacklevel=1)
            logger.error("the reader's own record")
            inside.set()
            done.wait(10)
        caught["reader"] = list(messages)

    thread = threading.Thread(target=reader)
    try:
        thread.start()
        assert inside.wait(10)
        warnings.warn("the main thread's warning", UserWarning, stacklevel=1)
        logger.error("the main thread's record")
    finally:
        done.set()
        thread.join(10)
        logger.removeHandler(keep)
    assert caught["reader"] == ["the reader's own warning", "the reader's own record"]
    assert kept == ["the main thread's record"]


def test_headers_that_may_misplace_the_voxels_are_read_with_a_warning(tmp_path):
    """Spatial units other than mm (read as mm, as the organisers' scripts do), and an sform and a
    qform that disagree (the sform used): a warning each; a sound header gives none."""
    data = np.full((20, 20, 10), -1000, np.int16)
    data[5:15, 5:15, 2:8] = 40
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    sound = nib.Nifti1Image(data, affine)
    nib.save(sound, str(tmp_path / "sound.nii.gz"))
    assert read_ct(tmp_path / "sound.nii.gz").warnings == []
    odd = nib.Nifti1Image(data, affine)
    odd.header.set_xyzt_units("micron")
    shifted = affine.copy()
    shifted[0, 3] = 100.0
    odd.set_qform(shifted, code=1)
    odd.set_sform(affine, code=1)
    nib.save(odd, str(tmp_path / "odd.nii.gz"))
    ct = read_ct(tmp_path / "odd.nii.gz")
    assert ct.warnings == ["spatial units 'micron' in the header: the spacing is read as mm, as the organisers' scripts read it",
                           "the sform and the qform place the voxels up to 100 mm apart: the sform is used"]
    assert np.allclose(ct.spacing, (0.8, 0.8, 2.5))
    nib.save(sound, str(tmp_path / "no_forms.nii"))
    raw = bytearray((tmp_path / "no_forms.nii").read_bytes())
    raw[252:256] = bytes(4)  # qform_code and sform_code (int16 each) 0: no orientation at all
    (tmp_path / "no_forms.nii").write_bytes(bytes(raw))
    assert read_ct(tmp_path / "no_forms.nii").warnings == [
        "neither a qform nor an sform in the header (both codes 0): the orientation is unknown and read as nibabel "
        "reads it, LAS (the voxel axes along -x, y, z): left and right may be mirrored"]


def test_reading_in_a_thread_leaves_the_warning_filters_of_the_others_alone():
    """Filters are the process's: one the main thread adds while a reader thread collects (as
    `import torch` adds some beside the first read) is still there when the reading ends."""
    import threading
    import warnings

    from flare_common.nifti import nibabel_messages

    inside, done = threading.Event(), threading.Event()

    def reader() -> None:
        with nibabel_messages():
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=reader)
    with warnings.catch_warnings():
        thread.start()
        try:
            assert inside.wait(10)
            before = list(warnings.filters)
            warnings.filterwarnings("ignore", message="added by the main thread meanwhile")
        finally:
            done.set()
            thread.join(10)
        added = [f for f in warnings.filters if f[1] is not None and f[1].pattern == "added by the main thread meanwhile"]
        assert len(added) == 1 and [f for f in warnings.filters if f not in added] == before


def test_warnings_are_named_by_their_source_and_collected_for_every_file(tmp_path):
    """numpy's warnings are numpy's, not nibabel's; a warning the filters show once per place
    (the default) is still collected for each file that raises it."""
    header = nib.Nifti1Header(header_bytes([])[:348], check=False)
    header["scl_slope"] = 1e38  # the int16 voxels times 1e38 overflow float32: numpy says so
    raw = bytes(header.binaryblock) + header_bytes([])[348:]
    for name in ("a_0000.nii.gz", "b_0000.nii.gz"):
        huge = read_ct(write(tmp_path, raw, name))
        assert "numpy: overflow encountered in cast" in huge.warnings, huge.warnings


def nifti_bytes() -> bytes:
    return nib.Nifti1Image(DATA, AFFINE).to_bytes()


@pytest.mark.parametrize(("name", "content", "warning"), [
    ("junk.nii.gz", lambda raw: gzip.compress(raw) + b"JUNKJUNK", "gzip: 8 byte(s) after the end of the gzip stream"),
    ("padded.nii.gz", lambda raw: gzip.compress(raw) + bytes(512), None),
    ("two_members.nii.gz", lambda raw: gzip.compress(raw[:200]) + gzip.compress(raw[200:]), None),
    ("compressed.nii", lambda raw: gzip.compress(raw), "gzip: gzip-compressed, though its name does not end in .gz"),
    ("plain.nii.gz", lambda raw: raw, "gzip: not gzip-compressed, though its name ends in .gz"),
])
def test_the_content_decides_whether_a_file_is_gzip_and_trailing_bytes_are_a_warning(tmp_path, name, content, warning):
    """What nibabel reads is read: trailing bytes after a complete stream (a warning), zero padding
    and several members (as gzip reads them), a gzip file named .nii and a plain one named .nii.gz
    (a warning each); the scorer's reader reads the same data."""
    path = tmp_path / name
    path.write_bytes(content(nifti_bytes()))
    ct = read_ct(path)
    np.testing.assert_array_equal(ct.from_canonical(ct.data), DATA.astype(np.float32))
    gzip_warnings = [w for w in ct.warnings if w.startswith("gzip: ")]
    assert gzip_warnings == ([] if warning is None else [next(w for w in gzip_warnings if w.startswith(warning))])
    np.testing.assert_array_equal(read_labels(path).data, DATA)
    assert_same_runs(read_label_runs(path).runs, DATA)


def test_a_stream_cut_inside_or_a_bad_crc_is_still_refused_with_its_reason(tmp_path):
    stream = gzip.compress(nifti_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(stream[:-20])
    with pytest.raises(InputError, match="ends inside the gzip stream"):
        read_ct(tmp_path / "cut.nii.gz")
    bad_crc = bytearray(stream)
    bad_crc[-8] ^= 0xFF
    (tmp_path / "crc.nii.gz").write_bytes(bytes(bad_crc))
    with pytest.raises(InputError, match="unreadable"):
        read_ct(tmp_path / "crc.nii.gz")
    (tmp_path / "cut_junk.nii.gz").write_bytes(stream[:-20] + b"JUNK")
    with pytest.raises(InputError):
        read_ct(tmp_path / "cut_junk.nii.gz")


@pytest.mark.parametrize("dtype, shape, name", [
    (np.uint8, (13, 7, 9), "a.nii.gz"), (">i2", (13, 7, 9), "b.nii.gz"), (np.uint16, (5, 11, 6), "c.nii"),
    (np.int32, (13, 7, 9, 1), "d.nii.gz"), (np.float32, (13, 7, 9), "e.nii.gz")])
def test_label_runs_read_a_few_lines_at_a_time_are_those_of_the_whole_array(tmp_path, monkeypatch, dtype, shape,
                                                                               name):
    """Integer labels are streamed (here 40 bytes at a time, so chunks of whole lines and a short
    last one); float-stored labels go through the whole array, rounded."""
    import evaluation.imageio as imageio

    rng = np.random.default_rng(4)
    data = (rng.integers(0, 4, shape) * (rng.random(shape) < 0.5)).astype(dtype)
    nib.save(nib.Nifti1Image(data, AFFINE), str(tmp_path / name))
    whole = read_labels(tmp_path / name)
    monkeypatch.setattr(imageio, "CHUNK_BYTES", 40)
    if np.dtype(dtype).kind != "f":  # never the whole array
        monkeypatch.setattr(imageio, "label_runs", None)
    streamed = read_label_runs(tmp_path / name)
    assert_same_runs(streamed.runs, whole.data)
    assert streamed.spacing == whole.spacing and np.array_equal(streamed.affine, whole.affine)


def test_negative_labels_are_refused_when_streamed_too(tmp_path):
    data = np.zeros((4, 5, 6), np.int16)
    data[1, 2, 3] = -2
    nib.save(nib.Nifti1Image(data, AFFINE), str(tmp_path / "neg.nii.gz"))
    for reader in (read_labels, read_label_runs):
        with pytest.raises(InputError, match=r"negative label values \(min -2\)"):
            reader(tmp_path / "neg.nii.gz")


def test_broken_parts_of_a_header_that_are_not_in_use_are_warnings_for_predict(tmp_path, spy):
    """An sform in use places the voxels on its own: predict reads such a CT whatever its pixdim or
    qform say (real files carry a pixdim of 0, one in metres, or a quaternion a rounding past unit
    length, as nibabel's issue 625 shows), and warns that they disagree; where the qform is the
    affine, a quaternion that is no rotation is refused, saying so. The scorer, which takes the
    spacing from pixdim as the organisers' scripts do, still refuses a broken pixdim."""
    excess = ((1 + 2e-6) / 3) ** 0.5  # b = c = d: b^2 + c^2 + d^2 = 1 + 2e-6, past nibabel's slack
    spy.records.clear()  # what other tests logged on purpose
    cases = {
        "pixdim_z0": ([("pixdim[3]", 0.0)], 1, 1, "pixdim 0.8 x 0.9 x 1 mm differs from the sform's voxel sizes "  # 0 read as 1
                                                  "0.8 x 0.9 x 2.5 mm: the sform is used (the organisers' scripts take "
                                                  "the spacing for NSD from pixdim)"),
        "pixdim_metres": ([("pixdim[1]", 0.0008), ("pixdim[2]", 0.0009), ("pixdim[3]", 0.0025)], 0, 1,
                          "pixdim 0.0008 x 0.0009 x 0.0025 mm differs from the sform's voxel sizes"),
        "quaternion_past_unit": ([(q, excess) for q in QUATERNION[:3]], 1, 1,
                                 "qform quaternion (b, c, d) of squared length 1.000002, more than 1: not a rotation: "
                                 "the sform is used"),
        "quaternion_nan": ([("quatern_b", np.nan)], 1, 1, "qform quaternion or offset not finite: the sform is used"),
    }
    for name, (mutations, qform, sform, warning) in cases.items():
        path = write(tmp_path, header_bytes(mutations, qform, sform), f"{name}.nii.gz")
        ct = read_ct(path)
        assert any(w.startswith(warning) for w in ct.warnings), (name, ct.warnings)
        assert np.allclose(ct.spacing, (0.8, 0.9, 2.5)) and np.allclose(ct.image.affine, AFFINE)
        if name.startswith("pixdim"):
            with pytest.raises(InputError, match=r"voxel spacing \(pixdim\)"):
                read_labels(path)
        else:
            assert read_labels(path).spacing == pytest.approx((0.8, 0.9, 2.5))
    qform_alone = write(tmp_path, header_bytes([(q, excess) for q in QUATERNION[:3]], 1, 0), "qform_alone.nii.gz")
    for reader in (read_ct, read_labels):
        with pytest.raises(InputError, match=r"qform quaternion \(b, c, d\) of squared length 1\.000002, more than 1: "
                                             r"not a rotation$"):
            reader(qform_alone)
    assert spy.records == []


def test_a_two_dimensional_image_is_one_slice(tmp_path):
    """Some converters write a single slice as a 2D image: it is read as a volume of one slice, as
    the same slice stored as (x, y, 1) is, and its label map keeps the file's 2D shape."""
    from inference.imageio import labels_image

    data = np.full((24, 20), -1000, np.int16)
    data[6:18, 5:15] = 40
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), str(tmp_path / "slice.nii.gz"))
    ct = read_ct(tmp_path / "slice.nii.gz")
    assert ct.data.shape == (24, 20, 1) and ct.spacing == pytest.approx((0.8, 0.8, 3.0))
    labels = labels_image(ct.from_canonical(np.ones(ct.data.shape, np.uint8)), ct)
    assert labels.shape == (24, 20) and np.allclose(labels.affine, ct.image.affine)
    nib.save(labels, str(tmp_path / "slice_labels.nii.gz"))
    assert read_labels(tmp_path / "slice_labels.nii.gz").data.shape == (24, 20, 1)


def test_an_unusable_sform_beside_a_sound_qform_is_refused_saying_how_to_use_the_qform(tmp_path):
    path = write(tmp_path, header_bytes([(row, 0.0) for row in SROWS], 1, 1), "zero_sform.nii.gz")
    for reader in (read_ct, read_labels):
        with pytest.raises(InputError, match=r"^sform: affine voxel sizes 0 x 0 x 0 mm is not within 0\.05-50 mm "
                                             r"\(the qform is sound: set sform_code to 0 to use it\)$"):
            reader(path)
