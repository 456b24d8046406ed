"""Writing result files atomically, and checking before any work that they can be written."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temporary_name(path: Path) -> Path:
    """A hidden name beside path, unique to this process and call, for writing path's new content."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_output(path: Path, mode: str = "wb", fsync: bool = False) -> Iterator[IO]:
    """A new file to write path's content into ("wb" or "w"): renamed onto path when the block
    ends without an error, removed when it raises, so readers see the old file or the complete
    new one, never a part (and a reader holding the old one open or memory-mapped keeps it).
    fsync: the data reaches the disk before the rename. The file gets the ordinary permissions
    of a new file (0666 less the umask)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # named after the file meant, not the temporary one (or none: a full disk)
        tmp.unlink(missing_ok=True)
        raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write text to path so that readers see either the old file or the complete new one."""
    with atomic_output(path, "w") as f:
        f.write(text)


def _probe(folder: Path) -> str | None:
    """None when a new file can be created (and removed) in an existing folder, else why not."""
    probe = folder / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        return f"not writable ({exc.strerror or type(exc).__name__})"
    return None


def folder_problem(folder: Path) -> str | None:
    """Make sure `folder` exists (created with its parents) and files can be written in it; None
    when it can, else a short reason (it is a file, cannot be created, is read-only)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return "exists and is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the folder ({exc.strerror or type(exc).__name__})"
    return _probe(folder)


def file_problem(path: Path) -> str | None:
    """Whether a result file can later be written at `path` (its folder is created now); None
    when it can, else a short reason."""
    path = Path(path)
    if path.is_dir():
        return "is a folder"
    problem = folder_problem(path.parent)
    return f"its folder {path.parent}: {problem}" if problem else None
