"""The organ probe: what it paints, and its one-line refusals."""
import nibabel as nib
import numpy as np

from bench import organ_probe


def test_painting_changes_only_the_mask_to_the_asked_for_values():
    ct = np.full((20, 20, 20), -100, np.int16)
    mask = np.zeros(ct.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    out = organ_probe.painted(ct, mask, 45.0, 10.0, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.array_equal(out[~mask], ct[~mask])
    assert abs(out[mask].mean() - 45.0) < 1.0 and abs(out[mask].std() - 10.0) < 1.0
    assert (ct == -100).all()  # the input is left as it was


def test_labels_without_the_organ_or_of_another_shape_are_refused_naming_the_file(tmp_path, capsys):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), affine), tmp_path / "liver_only.nii.gz")
    nib.save(nib.Nifti1Image(np.full((8, 8, 6), 4, np.uint8), affine), tmp_path / "small.nii.gz")
    for name, problem in (("liver_only.nii.gz", "no voxel of label 4"), ("small.nii.gz", "differs from the CT's")):
        code = organ_probe.main(["--ct", str(tmp_path / "ct.nii.gz"), "--labels", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"error: {tmp_path / name}: ") and problem in err
        assert len(err.splitlines()) == 1


def test_clefts_are_the_unlabelled_voxels_the_organs_slices_close_over():
    """A fissure cut into an organ is a cleft; a neighbour's voxels and the open outside are not."""
    labels = np.zeros((30, 30, 4), np.uint8)
    labels[5:25, 5:25] = 1
    labels[14:16, 5:18] = 0  # a 2-voxel fissure from one edge into the organ
    labels[5:25, 25:28] = 3  # another organ beside it
    found = organ_probe.clefts(labels, 1, 4)
    assert found[14:16, 8:18].all()  # the fissure, but for its mouth
    assert not found[labels != 0].any() and not found[:3].any() and not found[27:].any()
    assert found.sum() <= 2 * 13 * 4
