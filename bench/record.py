"""What every benchmark records beside its numbers: the machine, and its table's place in
docs/benchmarks.md (a section between two HTML comment markers, replaced on each --write-docs)."""
from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def cpu_flags() -> set[str]:
    """The CPU's feature flags as lscpu (or /proc/cpuinfo) lists them; empty where neither exists."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    found = re.search(r"Flags:\s*(.+)", text)
    if found is None and Path("/proc/cpuinfo").exists():
        found = re.search(r"flags\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return set(found.group(1).split()) if found else set()


def cpu_model() -> str:
    if Path("/proc/cpuinfo").exists():
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        if found:
            return found.group(1).strip()
    return platform.processor() or "unknown CPU"


def cpu_description() -> str:
    """The CPU model, its cores and the flags that decide precisions and kernels (present and absent)."""
    flags = cpu_flags()
    present = [f for f in FLAGS_OF_INTEREST if f in flags]
    absent = [f for f in FLAGS_OF_INTEREST if f not in flags]
    return (f"{cpu_model()}, {os.cpu_count()} cores; flags: {', '.join(present) or 'none of interest'}; "
            f"absent: {', '.join(absent) or 'none'}")


def machine_line() -> str:
    """The date, the machine (cpu_description) and Python: what a benchmark prints beside its numbers."""
    return f"{time.strftime('%Y-%m-%d')}; {cpu_description()}; Python {platform.python_version()}"


def package_version(name: str) -> str | None:
    """The installed version of a distribution (e.g. openvino, isal), None where it is not installed;
    read from its metadata, without importing it."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def exit_description(returncode: int) -> str:
    """A child process's end in words: 'exit code N', or the signal that killed it (SIGKILL:
    often the kernel's out-of-memory killer)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")


def section_problem(doc: str) -> str | None:
    """The first section of a docs text whose markers do not pair up (a start without its end after
    it, or an end without its start), in words; None when every section is whole."""
    for match in re.finditer(r"<!-- ([\w.-]+):(start|end) -->", doc):
        name = match.group(1)
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
            return f"{start} and {end} must each appear once, the start first"
    return None


def require_docs_sections() -> None:
    """Before a benchmark measures anything for --write-docs: exit 2 with one line when DOCS has a
    section whose markers do not pair up (its table could not be written after the run)."""
    problem = section_problem(DOCS.read_text()) if DOCS.exists() else None
    if problem is not None:
        print(f"error: {DOCS.name}: {problem}; fix the markers before --write-docs", file=sys.stderr)
        raise SystemExit(2)


def write_section(name: str, heading: str, text: str) -> None:
    """Put `text` between the markers <!-- NAME:start --> and <!-- NAME:end --> of DOCS,
    replacing what was there; a new section `## heading` at the end when the markers are absent.
    ValueError where the markers do not pair up."""
    docs = DOCS
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = docs.read_text() if docs.exists() else "# Benchmarks\n"
    problem = section_problem(doc)
    if problem is not None:
        raise ValueError(f"{docs.name}: {problem}")
    if start in doc:
        head, rest = doc.split(start, 1)
        doc = f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}"
    else:
        doc = f"{doc.rstrip()}\n\n## {heading}\n\n{start}\n{text}\n{end}\n"
    docs.write_text(doc)


def publish(result: dict, path: Path, text: str, section: tuple[str, str] | None) -> None:
    """A benchmark's end: its result as JSON at `path`, its tables printed and, with `section`
    (name, heading), written into DOCS (write_section)."""
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    if section is not None:
        try:
            write_section(*section, text)
        except ValueError as exc:
            print(f"error: {exc}; the tables were not written there (the result is in {path})", file=sys.stderr)
            raise SystemExit(1) from None
