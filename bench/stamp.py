"""Inputs a benchmark keeps between runs (phantom CTs, label maps, prepared weights), each with a
stamp beside it: what it was made from. An input is used again only when its stamp matches what
this run would make it from, so that a kept file never stands in for a different one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHANTOM_SOURCES = (ROOT / "training" / "phantom",)  # the generator of the phantom CTs and their labels


def sources_digest(*paths: Path) -> str:
    """SHA-256 (hex, first 16 digits) over the Python sources of the given files and folders: the
    identity of the code that makes an input, which changes when that code does."""
    digest = hashlib.sha256()
    for path in paths:
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(source.relative_to(ROOT)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def stamp_of(path: Path) -> Path:
    """Where the stamp of a kept input lives: beside it."""
    return path.with_name(path.name + ".source.json")


def is_current(path: Path, made_from: dict) -> bool:
    """Whether `path` exists and its stamp says it was made from `made_from`."""
    stamp = stamp_of(path)
    if not (path.exists() and stamp.is_file()):
        return False
    try:
        return json.loads(stamp.read_text()) == json.loads(json.dumps(made_from))
    except ValueError:
        return False


def write_stamp(path: Path, made_from: dict) -> None:
    """Record what `path` was just made from."""
    stamp_of(path).write_text(json.dumps(made_from, sort_keys=True) + "\n")
