"""A fake submission for the efficiency tests; it behaves as the case's name says.

    python submission.py INPUTS OUTPUTS

normal: writes an all-zero label map of the input's shape; slow: sleeps 1.5 s first; crash:
exits 3; nothing: exits 0 without output; wrongshape: writes a 4x4x4 map; memory: holds 300 MB
for 1 s; daemon: leaves a double-forked `sleep 600` running (its PID in the file $FAKE_PIDS) and
then writes a normal output; child: leaves a plain `sleep 600` child in its own process group
(its PID in $FAKE_PIDS.child) and writes a normal output. Each run appends "<case> <seconds from its start to its end>" to the
file $FAKE_TIMES where that is set.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

start = time.monotonic()
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

inputs, outputs = Path(sys.argv[1]), Path(sys.argv[2])
case = next(inputs.glob("*.nii.gz"))
mode = case.name.split("_")[0]
image = nib.load(case)
shape = image.shape


def finish(code: int) -> None:
    if os.environ.get("FAKE_TIMES"):
        with open(os.environ["FAKE_TIMES"], "a") as f:
            f.write(f"{mode} {time.monotonic() - start}\n")
    sys.exit(code)


if mode == "slow":
    time.sleep(1.5)
elif mode == "crash":
    finish(3)
elif mode == "nothing":
    finish(0)
elif mode == "wrongshape":
    shape = (4, 4, 4)
elif mode == "memory":
    block = np.ones(300 * 2**20, dtype=np.uint8)
    time.sleep(1.0)
    del block
elif mode == "daemon":  # the subshell exits at once: the sleep is orphaned in a session of its own
    subprocess.run(["/bin/sh", "-c", '(setsid sleep 600 & echo $! > "$0")', os.environ["FAKE_PIDS"]], check=True)
elif mode == "child":  # never waited for: still running, in the case's process group, when this exits
    Path(os.environ["FAKE_PIDS"] + ".child").write_text(str(subprocess.Popen(["sleep", "600"]).pid))
name = case.name.replace("_0000.nii.gz", ".nii.gz")
nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), image.affine), str(outputs / name))
finish(0)
