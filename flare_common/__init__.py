"""What the submission (inference/), the organisers' tools (evaluation/) and training share.

A small package with no heavy dependencies (numpy and nibabel only), so that neither side has to
import the other: inference/ never imports evaluation/, and evaluation/ never imports torch.

    errors   InputError and one-line error text
    nifti    NIfTI naming (<case>_0000.nii.gz -> <case>.nii.gz) and the checked opening of a file
    files    atomic writes and the checks that a folder or file can be written
    units    MB, the unit of every memory figure
    labels   the FLARE organ tables of 2021, 2022 and 2023
    cli      --version, examples in --help, Ctrl-C and missing-dependency handling of every command
    commands the console commands (flare-predict, flare-score, ...) and what each needs installed
"""

__version__ = "0.1.0"
