"""What every benchmark records beside its numbers: the machine, and its table's place in
docs/benchmarks.md (a section between two HTML comment markers, replaced on each --write-docs)."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
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


def write_section(name: str, heading: str, text: str) -> None:
    """Put `text` between the markers <!-- NAME:start --> and <!-- NAME:end --> of DOCS,
    replacing what was there; a new section `## heading` at the end when the markers are absent."""
    docs = DOCS
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = docs.read_text() if docs.exists() else "# Benchmarks\n"
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
        write_section(*section, text)
