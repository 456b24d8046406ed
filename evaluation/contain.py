"""Keeping every process of a case in reach: the submission's tree, double-forked daemons included.

A process whose parent exits is normally re-parented to init, so `(setsid daemon &)` leaves the
submission's process tree, its session and its process group: killing those misses it. On Linux
the harness therefore makes itself a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER, no
privileges needed): orphans of its descendants are re-parented to the harness instead, so they
stay visible as its children and can be measured and killed. `CaseProcesses` is one case's view:
the command's process tree plus the orphans adopted since the case started, and their trees.
Where prctl is not available the case's session is searched as well (a daemon that calls setsid
can then escape; `subreaper` says so once).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
KILL_ROUNDS = 50  # rounds of "find, kill" until nothing is left (processes forking while being killed)


def _prctl():
    """libc's prctl, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def is_subreaper() -> bool:
    """Whether this process is a child subreaper now."""
    prctl = _prctl()
    if prctl is None:
        return False
    flag = ctypes.c_int(0)
    return prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value != 0


@contextmanager
def subreaper() -> Iterator[bool]:
    """Make this process a child subreaper for the duration; yields whether that worked (with a
    one-line notice on stderr when not). The previous setting is restored on exit."""
    prctl = _prctl()
    before = is_subreaper()
    ok = prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    if not ok:
        print("notice: cannot become a child subreaper (prctl unavailable): a submission's daemon that "
              "leaves its session may escape the kill", file=sys.stderr)
    try:
        yield ok
    finally:
        if ok and not before:
            prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class CaseProcesses:
    """The processes of one case started with `subprocess.Popen(..., start_new_session=True)`.

    Create it just before starting the case (it notes this process's children at that moment),
    then `attach(proc)`. `processes()` lists the live ones; `kill()` kills all of them.
    """

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._before = {c.pid for c in self._children()}
        self.proc: subprocess.Popen | None = None
        self._root: psutil.Process | None = None

    def _children(self) -> list[psutil.Process]:
        try:
            return self._me.children()
        except psutil.Error:
            return []

    def attach(self, proc: subprocess.Popen) -> CaseProcesses:
        self.proc = proc
        try:
            self._root = psutil.Process(proc.pid)
        except psutil.Error:
            self._root = None
        return self

    def adopted(self) -> list[psutil.Process]:
        """Children of this process that appeared since the case started, other than the case's own
        process: orphans of the case re-parented here by the subreaper."""
        own = self.proc.pid if self.proc else None
        return [c for c in self._children() if c.pid not in self._before and c.pid != own]

    def _session(self) -> list[psutil.Process]:
        """Processes still in the case's session (the session id is the case process's pid)."""
        if self.proc is None:
            return []
        found = []
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and os.getsid(p.pid) == self.proc.pid:
                    found.append(p)
            except (OSError, psutil.Error):
                continue
        return found

    def processes(self, search_session: bool = False) -> list[psutil.Process]:
        """The case's live processes (zombies left out): its tree, the adopted orphans and their
        trees, and with search_session also whatever is left in its session."""
        seen: dict[int, psutil.Process] = {}
        roots = ([self._root] if self._root else []) + self.adopted()
        for root in roots:
            for p in _tree(root):
                seen.setdefault(p.pid, p)
        if search_session:
            for p in self._session():
                seen.setdefault(p.pid, p)
        return [p for p in seen.values() if _alive(p)]

    def kill(self) -> int:
        """SIGKILL every process of the case, in rounds until none is left, and reap the adopted
        ones; returns how many processes were killed (the case's own process included)."""
        killed = {p.pid for p in self.processes(search_session=True)}  # the group's SIGKILL takes most of them
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        for _ in range(KILL_ROUNDS):
            alive = self.processes(search_session=True)
            if not alive:
                break
            for p in alive:
                try:
                    p.kill()
                    killed.add(p.pid)
                except psutil.Error:
                    pass
            own = self.proc.pid if self.proc else None
            psutil.wait_procs([p for p in alive if p.pid != own], timeout=0.5)  # Popen reaps its own
            self.reap()
        self.reap()
        return len(killed)

    def reap(self) -> None:
        """Collect the exit status of adopted orphans that have ended (they would stay zombies)."""
        for child in self.adopted():
            with contextlib.suppress(ChildProcessError):  # not ours to wait for, or collected already
                os.waitpid(child.pid, os.WNOHANG)
