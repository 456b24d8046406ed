"""What every command of the project has in common: --version, examples in --help, one line and
exit code 130 on Ctrl-C (143 on SIGTERM, which stops a command as Ctrl-C does), one line and exit
code 2 when a package it needs is not installed.

Exit codes of every command: 0 done, 1 done with problems (each listed) or stopped by a file that
could not be written or read outside any one case (a full disk: one line naming the file), 2 usage
error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM: `docker stop`, `timeout`, a job
scheduler).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

from flare_common import __version__
from flare_common.errors import describe_error
from flare_common.files import file_problem, folder_problem

DISTRIBUTION = "flare21-c2f"  # the name pip knows the project by (pyproject.toml)
INTERRUPTED = 130  # the shell's exit code for a process ended by SIGINT
PROJECT_PACKAGES = frozenset({"flare_common", "inference", "evaluation", "training", "bench", "tests"})
# the packages of the submission's requirements (requirements.txt, extra "submission"); every
# other third-party package is in the organisers' (requirements-evaluation.txt, the base install)
SUBMISSION_MODULES = frozenset({"torch", "cc3d"})

Main = Callable[[list[str] | None], int]
T = TypeVar("T")
MAX_WORKERS = 8  # worker processes a command starts by default at most


class Terminated(KeyboardInterrupt):
    """SIGTERM (`docker stop`, a harness's timeout, a job scheduler) or SIGHUP (the terminal or SSH
    session closed): raised where the command is, so that it stops as at Ctrl-C (what it cleans up
    on Ctrl-C it cleans up here too), with the shell's exit code for SIGTERM."""

    EXIT_CODE = 143


def default_workers() -> int:
    """Worker processes a command starts by default: the CPUs this process may run on (its
    affinity, where the system has one), at most MAX_WORKERS."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, usable))


def _terminate(signum, frame) -> None:
    raise Terminated


def termination_signals() -> list[int]:
    """The signals Terminated stands for: SIGTERM, and SIGHUP unless this process ignores it (nohup)."""
    return [signal.SIGTERM] + ([signal.SIGHUP] if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN else [])


@contextlib.contextmanager
def _handled(stops: list[int], handler: Callable) -> Iterator[None]:
    """Within the block, `handler` for these signals, then their previous handlers again; in the
    main thread only (signal handlers belong to it: elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {stop: signal.signal(stop, handler) for stop in stops}
    try:
        yield
    finally:
        for stop, earlier in previous.items():
            signal.signal(stop, earlier)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (termination_signals) raise Terminated in the main thread."""
    with _handled(termination_signals(), _terminate):
        yield


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Within the block (in the main thread), Ctrl-C, SIGTERM and SIGHUP wait for its end, so that
    files that belong together are all written; then the stop is raised as it would have been
    (KeyboardInterrupt, or Terminated). A Ctrl-C the process ignores stays ignored."""
    received: list[int] = []
    ctrl_c = [signal.SIGINT] if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else []
    with _handled(ctrl_c + termination_signals(), lambda signum, frame: received.append(signum)):
        yield
    if received:
        raise KeyboardInterrupt if received[0] == signal.SIGINT else Terminated


def prog(module_prog: str) -> str:
    """The program name for usage lines: the console command when started as one (flare-...),
    else the given `python -m ...` form."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("flare-") else module_prog


def parser(module_prog: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """An ArgumentParser with --version and the given example command lines in its help."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None
    result = argparse.ArgumentParser(prog=prog(module_prog), description=textwrap.fill(description, 100), epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(result)
    return result


def refuse_unwritable(parser: argparse.ArgumentParser, flag: str, path: Path | None, folder: bool) -> None:
    """A usage error (exit 2, one line) where a command's output `path` (a folder, or a file) cannot
    be written; its folder is created where it can be. Nothing for no path (an optional output)."""
    problem = None if path is None else folder_problem(path) if folder else file_problem(path)
    if problem:
        parser.error(f"{flag} {path}: {problem}")


def at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (e.g. --repeats 0 is refused), and at
    most `maximum` where given (a seed a random generator can take)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"{value}: must be {bounds}")
        return value
    return parse


def finite_float(text: str) -> float:
    """An argparse type: a finite number (nan and inf are refused: they pass every range check
    written as `value < low` and would switch a limit off or hang a wait)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
    return value


def add_version(target: argparse.ArgumentParser) -> None:
    """--version: the project's version and the Python running it."""
    target.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__} ({DISTRIBUTION}, Python {sys.version.split()[0]})",
                        help="print the version and exit")


def missing_package(module: str) -> str:
    """One line saying how to install the requirements that bring a missing module."""
    if module in SUBMISSION_MODULES:
        how = 'pip install -r requirements.txt, or pip install ".[submission]" in the project'
    else:
        how = 'pip install -r requirements-evaluation.txt, or pip install . in the project'
    return f"{module} is not installed here ({how})"


def third_party(exc: ModuleNotFoundError) -> str | None:
    """The top-level name of a missing third-party module, None for the project's own modules."""
    top = (exc.name or "").split(".")[0]
    return top if top and top not in PROJECT_PACKAGES else None


def run(main: Main, argv: list[str] | None = None) -> int:
    """Run a command's main and return its exit code: Ctrl-C gives one line and 130, SIGTERM one
    line and 143, a missing third-party package one line naming what to install and 2, a file
    that cannot be written or read (what no case's own handling caught: a full disk while the
    results are written) one line naming it and 1."""
    try:
        with sigterm_as_interrupt():
            return main(argv)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or describe_error(exc)}", file=sys.stderr)
        return 1
    except Terminated:
        print("\nterminated", file=sys.stderr)
        return Terminated.EXIT_CODE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    except ModuleNotFoundError as exc:
        module = third_party(exc)
        if module is None:
            raise
        print(f"error: {missing_package(module)}", file=sys.stderr)
        return 2


def progress(items: Iterable[T], **options) -> Iterable[T]:
    """tqdm's bar over items on stderr where stderr is a terminal; the items themselves elsewhere,
    so that a batch run never imports tqdm (13 ms of a scorer's start-up)."""
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm
    return tqdm(items, file=sys.stderr, **options)


def exit_at_once(code: int) -> NoReturn:
    """End the process with `code` once stdout and stderr are flushed, without the interpreter's
    teardown (0.4 s with torch and OpenVINO loaded, which the organisers time in every case;
    30 ms for the scorer's numpy and nibabel).
    Only for a command whose files are all written and closed when its main returns."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
