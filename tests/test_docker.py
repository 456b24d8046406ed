"""The submission image, read and run for real.

The Dockerfile's build arguments are checked everywhere. The rest needs a Docker engine and a
built CPU image: `.ci/docker_test.sh` starts the engine, builds the image and runs this file with
FLARE_DOCKER_IMAGE set (without it these tests are skipped). They run the image as the organisers
do (`docker run --rm -v IN:/workspace/inputs:ro -v OUT:/workspace/outputs --network none
--read-only`) on the real CT beside the checkout (../shared/data/real-ct, when present) and on
phantoms, and run evaluation.efficiency --image against the engine.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import psutil
import pytest

from bench.shared_data import REAL_CT
from evaluation.efficiency import main as efficiency_main
from evaluation.nvml import GpuMemory

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("FLARE_DOCKER_IMAGE", "")
USER = "4242:4242"  # a caller who is not root
LABELS = {0, 1, 2, 3, 4}


def dockerfile_args() -> dict[str, str]:
    """The Dockerfile's build arguments and their defaults."""
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(.*)$", text, re.M))


def test_the_default_build_is_the_cuda_12_gpu_image():
    """`docker build -t flare .` must stay the GPU submission: CUDA base, torch from PyTorch's CUDA
    12 index (PyPI's Linux torch 2.13 needs CUDA 13 drivers, >= 580), checked for CUDA 12. torch
    2.13's one CUDA 12 build is for 12.6 (its CUDA support matrix: 12.6 and 13.0, 13.2
    experimental): an index of another CUDA 12 holds no torch 2.13, and the build would fail."""
    args = dockerfile_args()
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:12.6.")
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cu126"
    assert args["TORCH_WHEELS"] == args["CA_CERTS"] == "" and args["TORCH_CUDA"] == "12"
    text = (ROOT / "Dockerfile").read_text()
    assert '--index-url "$TORCH_INDEX" "$torch"' in text and "torch=\"$(grep '^torch==' " in text
    assert re.findall(r"^torch==\S+$", (ROOT / "requirements.txt").read_text(), re.M) == ["torch==2.13.0"]


def test_the_image_holds_the_submission_only():
    """inference/, flare_common/, the weights and predict.sh: never evaluation/ or training/; the
    torch wheel of a CPU build stays in the build stage (only /opt/venv is copied from it)."""
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    sources = [s for line in re.findall(r"^COPY (.+)$", final, re.M) for s in line.split()[:-1]]
    assert sources[:2] == ["--from=venv", "/opt/venv"]
    context = [s.replace("${WEIGHTS}", dockerfile_args()["WEIGHTS"]) for s in sources[2:]]
    assert all((ROOT / s).exists() for s in context), context
    assert {"inference/", "flare_common/", "weights/flare21_c2f.pt", "predict.sh"} <= set(context)
    assert "COPY ${WEIGHTS} weights/flare21_c2f.pt" in final  # one checkpoint, never all of weights/
    assert not [s for s in context if s.rstrip("/") in ("evaluation", "training", "requirements-evaluation.txt")]
    assert re.findall(r"^COPY (.+)$", text, re.M)[0] == "requirements.txt constraints.txt ${TORCH_WHEELS} ${CA_CERTS} /tmp/build/"
    assert re.findall(r"^ENTRYPOINT (.+)$", text, re.M)[-1] == '["/usr/bin/tini", "--"]'
    assert re.findall(r"^CMD (.+)$", text, re.M)[-1] == '["sh", "predict.sh"]'
    assert re.search(r"^WORKDIR /workspace$", final, re.M)
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".git", ".ci", "!.ci/build", "evaluation", "training", "tests"} <= set(ignored)
    assert not {"weights", "inference", "flare_common", "predict.sh", "requirements.txt"} & set(ignored)


# --- the image on a real engine ---------------------------------------------------------------


def docker(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """A docker command; its output on failure."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    """The CPU image to run (FLARE_DOCKER_IMAGE); skipped when none is given, failed when it is
    given but the engine or the image is not there."""
    if not IMAGE:
        pytest.skip("no image to run: .ci/docker_test.sh starts a Docker engine, builds the CPU image and runs "
                    "these tests (FLARE_DOCKER_IMAGE names it)")
    if shutil.which("docker") is None:
        pytest.fail("FLARE_DOCKER_IMAGE is set but there is no docker client")
    docker("info", timeout=60)
    docker("image", "inspect", IMAGE, timeout=60)
    return IMAGE


def organisers_run(image: str, inputs: Path, outputs: Path, *options: str) -> subprocess.CompletedProcess:
    """The image run as the organisers run it, with `options` before the image name."""
    return docker("run", "--rm", "-v", f"{inputs}:/workspace/inputs:ro", "-v", f"{outputs}:/workspace/outputs",
                  "--network", "none", "--read-only", *options, image, check=False)


def folders(root: Path, *cases: Path, owner: str | None = None) -> tuple[Path, Path]:
    """A fresh inputs folder holding `cases`, readable by anyone, and an empty outputs folder
    (owned by `owner`, UID:GID, when given)."""
    inputs, outputs = root / "inputs", root / "outputs"
    inputs.mkdir(parents=True)
    outputs.mkdir()
    for case in cases:
        shutil.copyfile(case, inputs / case.name)
        (inputs / case.name).chmod(0o644)
    inputs.chmod(0o755)
    if owner:
        uid, gid = map(int, owner.split(":"))
        os.chown(outputs, uid, gid)
    return inputs, outputs


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def check_segmentation(image_path: Path, seg_path: Path) -> np.ndarray:
    """The output of one case: on the input's grid and header, uint8 labels 0-4; its labels."""
    assert seg_path.is_file(), f"{seg_path.name} not written"
    image, seg = nib.load(image_path), nib.load(seg_path)
    assert seg.shape == image.shape
    assert np.allclose(seg.affine, image.affine, atol=1e-5)
    assert seg.header.get_zooms() == image.header.get_zooms()
    assert (int(seg.header["qform_code"]), int(seg.header["sform_code"])) == (
        int(image.header["qform_code"]), int(image.header["sform_code"]))
    assert seg.get_data_dtype() == np.uint8
    labels = np.asanyarray(seg.dataobj)
    assert set(np.unique(labels).tolist()) <= LABELS
    return labels


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> list[Path]:
    """Two small synthetic abdominal CTs (training.phantom)."""
    out = tmp_path_factory.mktemp("phantoms")
    subprocess.run([sys.executable, "-m", "training.phantom", "--out", str(out), "--cases", "2", "--seed", "7",
                    "--max-side", "112"], check=True, cwd=ROOT, capture_output=True, timeout=600)
    return sorted((out / "images").glob("*_0000.nii.gz"))


def test_the_real_ct_as_the_organisers_run_it(image, tmp_path):
    if not REAL_CT.is_file():
        pytest.skip(f"the real CT is not beside this checkout ({REAL_CT.relative_to(ROOT.parent)} is absent, "
                    "as in a fresh clone): only the phantoms are run")
    inputs, outputs = folders(tmp_path, REAL_CT)
    done = organisers_run(image, inputs, outputs)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in outputs.iterdir()) == ["ts_abdomen.nii.gz"]
    labels = check_segmentation(REAL_CT, outputs / "ts_abdomen.nii.gz")
    assert labels.any(), "no organ found in the real CT"
    assert "ts_abdomen_0000.nii.gz -> ts_abdomen.nii.gz" in done.stdout


def test_a_stop_at_once_ends_the_container_as_terminated(image, phantoms, tmp_path):
    """`docker stop` right after the start (before Python has its handler) ends the run with 143,
    not after Docker's 10 s grace with a kill (137): tini, process 1, passes the stop on."""
    inputs, outputs = folders(tmp_path, *phantoms)
    name = f"flare-stop-test-{os.getpid()}"
    docker("run", "-d", "--name", name, "-v", f"{inputs}:/workspace/inputs:ro", "-v", f"{outputs}:/workspace/outputs",
           "--network", "none", image)
    try:
        docker("stop", name, timeout=120)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "143"
    finally:
        docker("rm", "-f", name, check=False)


def test_one_bad_file_fails_the_run_and_the_good_case_is_still_written(image, phantoms, tmp_path):
    good = phantoms[0]
    broken = tmp_path / "broken_0000.nii.gz"
    broken.write_bytes(good.read_bytes()[:5000])  # a truncated download
    inputs, outputs = folders(tmp_path / "run", good, broken)
    before = snapshot(inputs)
    done = organisers_run(image, inputs, outputs)
    assert done.returncode == 1, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error: broken_0000.nii.gz: ")], done.stderr
    good_out = good.name.replace("_0000.nii.gz", ".nii.gz")
    assert sorted(p.name for p in outputs.iterdir()) == [good_out]  # nothing for the bad file, no partial file
    assert check_segmentation(good, outputs / good_out).any(), "no organ found in the phantom"
    assert snapshot(inputs) == before


def test_outputs_belong_to_the_user_given_with_docker_user(image, phantoms, tmp_path):
    """`docker run --user UID:GID` (docs/container.md): the outputs belong to that user on the host."""
    inputs, outputs = folders(tmp_path, phantoms[1], owner=USER)
    done = organisers_run(image, inputs, outputs, "--user", USER)
    assert done.returncode == 0, done.stderr
    written = list(outputs.iterdir())
    assert [p.name for p in written] == [phantoms[1].name.replace("_0000.nii.gz", ".nii.gz")]
    assert {f"{p.stat().st_uid}:{p.stat().st_gid}" for p in written} == {USER}
    check_segmentation(phantoms[1], written[0])


def test_nothing_is_written_outside_the_outputs_even_on_a_writable_root(image, phantoms, tmp_path):
    """Run as root without --read-only: the container's file system is left unchanged but for
    the mount points that docker itself adds."""
    inputs, outputs = folders(tmp_path, phantoms[0])
    name = f"flare-test-{os.getpid()}"
    try:
        done = docker("run", "--name", name, "-v", f"{inputs}:/workspace/inputs:ro", "-v",
                      f"{outputs}:/workspace/outputs", "--network", "none", image, check=False)
        assert done.returncode == 0, done.stderr
        changes = set(docker("diff", name).stdout.splitlines())
        assert changes <= {"C /workspace", "A /workspace/inputs", "A /workspace/outputs"}, changes
    finally:
        docker("rm", "-f", name, check=False)
    assert [p.name for p in outputs.iterdir()] == [phantoms[0].name.replace("_0000.nii.gz", ".nii.gz")]


# --- evaluation.efficiency --image on the real engine -------------------------------------------


def container_starts(since: float, until: float) -> list[str]:
    """Names of the containers the engine started between two times (seconds since the epoch)."""
    done = docker("events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter", "type=container",
                  "--filter", "event=start", "--format", "{{.Actor.Attributes.name}}", timeout=60)
    return done.stdout.split()


def leftover_containers() -> list[str]:
    """Containers of the harness still present (running or not) a little after a run."""
    deadline = time.monotonic() + 30
    while True:
        names = docker("ps", "-a", "--filter", "name=flare-eval-", "--format", "{{.Names}}").stdout.split()
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def gpu_options() -> list[str]:
    """--gpu auto where NVML sees no GPU (it must choose the CPU mode), else --gpu none."""
    if GpuMemory.open(0, quiet=True) is None:
        return []
    return ["--gpu", "none"]


def test_efficiency_runs_each_case_in_a_fresh_container_without_a_gpu(image, phantoms, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for case in phantoms:
        shutil.copyfile(case, inputs / case.name)
    options = gpu_options()
    since = time.time()
    code = efficiency_main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--image", image,
                            "--baseline", "0", "--interval", "0.1", "--timeout", "900", *options])
    until = time.time() + 1
    err = capsys.readouterr().err
    if not options:
        assert "notice: no GPU visible" in err and "could not select device driver" not in err
    table = pd.read_csv(tmp_path / "out" / "efficiency.csv").set_index("Name")
    assert code == 0, table["Detail"].to_dict()
    names = [case.name.replace("_0000.nii.gz", ".nii.gz") for case in phantoms]
    assert table["Status"].to_dict() == dict.fromkeys(names, "ok")
    started = container_starts(since, until)
    assert len(started) == len(phantoms) == len(set(started)) and all(n.startswith("flare-eval-") for n in started)
    for case, name in zip(phantoms, names, strict=True):
        check_segmentation(case, tmp_path / "out" / "predictions" / name)
        stem = name.removesuffix(".nii.gz")
        log = (tmp_path / "out" / "logs" / f"{stem}.log").read_text()
        assert case.name in log and not [other for other in phantoms if other != case and other.name in log]
        samples = pd.read_csv(tmp_path / "out" / "samples" / f"{stem}.csv")
        assert len(samples) >= 10 and samples["t_s"].is_monotonic_increasing
        assert samples["ram_tree_mb"].max() > 100 and samples["cpu_tree_pct"].max() > 0  # the container's processes
        assert samples["gpu_used_mb"].isna().all()
    assert table["MaxRAM_Tree"].gt(100).all() and table["MaxGPU_Mem"].isna().all()
    assert leftover_containers() == []


@pytest.fixture
def hanging_image(image):
    """The image with a predict.sh that never ends."""
    name = "flare-test-hang:latest"
    dockerfile = f"FROM {image}\nRUN printf 'exec sleep 7777\\n' > /workspace/predict.sh\n"
    done = subprocess.run(["docker", "build", "-t", name, "-"], input=dockerfile, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    yield name
    docker("rmi", "-f", name, check=False)


def test_efficiency_kills_a_hanging_container_at_the_timeout(hanging_image, phantoms, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copyfile(phantoms[0], inputs / phantoms[0].name)
    code = efficiency_main(["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--image", hanging_image,
                            "--baseline", "0", "--timeout", "5", "--rules", "flare22", *gpu_options()])
    assert code == 1
    row = pd.read_csv(tmp_path / "out" / "efficiency.csv").iloc[0]
    assert row["Status"] == "timeout" and 5 <= row["MeasuredTime"] < 5 + 60 and row["Penalised"]
    samples = pd.read_csv(tmp_path / "out" / "samples" / f"{row['Name'].removesuffix('.nii.gz')}.csv")
    assert samples["ram_tree_mb"].notna().any()  # the container's sleep was found and sampled
    assert leftover_containers() == []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _sleepers():
        time.sleep(0.5)
    assert _sleepers() == []


def _sleepers() -> list[int]:
    """Processes still running the hanging image's `sleep 7777`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", "7777"] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found
