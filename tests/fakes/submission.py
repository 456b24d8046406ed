"""A fake submission for the efficiency tests; it behaves as the case's name says.

    python submission.py INPUTS OUTPUTS

normal: writes an all-zero label map of the input's shape; slow: sleeps 1.5 s first; hang:
starts a child, writes both PIDs to the file $FAKE_PIDS and sleeps for ever; crash: exits 3;
nothing: exits 0 without output; wrongshape: writes a 4x4x4 map; memory: holds 300 MB for 1 s.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

inputs, outputs = Path(sys.argv[1]), Path(sys.argv[2])
case = next(inputs.glob("*.nii.gz"))
mode = case.name.split("_")[0]
image = nib.load(case)
shape = image.shape
if mode == "slow":
    time.sleep(1.5)
elif mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(os.environ["FAKE_PIDS"]).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(600)
elif mode == "crash":
    sys.exit(3)
elif mode == "nothing":
    sys.exit(0)
elif mode == "wrongshape":
    shape = (4, 4, 4)
elif mode == "memory":
    block = np.ones(300 * 2**20, dtype=np.uint8)
    time.sleep(1.0)
    del block
name = case.name.replace("_0000.nii.gz", ".nii.gz")
nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), image.affine), str(outputs / name))
