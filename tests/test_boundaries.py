"""Import boundaries: the submission never loads the organisers' code, the organisers' tools never
load torch, and what both need lives in flare_common, which loads neither side."""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flare_common", "inference", "evaluation", "training")


def loaded_after(imports: list[str]) -> set[str]:
    """The modules loaded by a fresh interpreter after importing the given modules."""
    code = (f"import importlib, json, sys\nfor m in {imports!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def modules_of(package: str) -> list[str]:
    return sorted(f"{package}.{p.stem}" for p in (ROOT / package).glob("*.py") if p.stem != "__init__")


def imported_packages(path: Path) -> set[str]:
    """The top-level names a source file imports, anywhere in it (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_submission_loads_no_evaluation_or_training_module():
    loaded = loaded_after(modules_of("inference"))
    assert "torch" in loaded and "inference.predict" in loaded  # the check sees what it should
    assert not {m for m in loaded if m.split(".")[0] in ("evaluation", "training")}


def test_the_pipeline_and_its_openvino_runtime_load_no_torch():
    """A CPU run through OpenVINO never pays for importing torch: the pipeline, its pre- and
    post-processing, the Spec, OpenVINO's runtime and predict's own module load none of it."""
    loaded = loaded_after(["inference.predict", "inference.pipeline", "inference.openvino_runtime", "inference.spec"])
    assert "inference.pipeline" in loaded and "inference.preprocessing" in loaded and "inference.postprocessing" in loaded
    assert "torch" not in loaded and not {m for m in loaded if m.startswith(("inference.checkpoint", "inference.torch_runtime"))}


def test_the_organisers_tools_load_no_torch():
    loaded = loaded_after(modules_of("evaluation"))
    assert "evaluation.run" in loaded and "evaluation.synthetic" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "cc3d")}
    assert not {m for m in loaded if m.startswith(("inference.pipeline", "inference.checkpoint", "inference.networks"))}


def test_no_source_file_crosses_a_boundary():
    """Imports inside functions count too: the submission's files never name evaluation or
    training, flare_common's never name a side or torch, evaluation's never name torch."""
    forbidden = {"inference": {"evaluation", "training"}, "flare_common": {"inference", "evaluation", "training", "torch"},
                 "evaluation": {"torch", "cc3d"}}
    crossings = [f"{path.relative_to(ROOT)} imports {sorted(imported_packages(path) & names)}"
                 for package, names in forbidden.items() for path in sorted((ROOT / package).glob("*.py"))
                 if imported_packages(path) & names]
    assert crossings == []


def test_predict_starts_without_torch_for_its_checks(tmp_path):
    """--help, --version and a usage error come before torch is imported."""
    code = ("import sys\nfrom inference.predict import main\n"
            "for argv in (['--version'], ['--help'], ['-i', sys.argv[1], '-o', sys.argv[2]]):\n"
            "    try:\n        code = main(argv)\n    except SystemExit as exc:\n        code = exc.code\n"
            "    print('result', argv[0], code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing"), str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = [line for line in done.stdout.splitlines() if line.startswith("result ")]
    assert results == ["result --version 0 False", "result --help 0 False", "result -i 2 False"]
