"""The error type of an unusable input file, and one-line error text."""
from __future__ import annotations

import textwrap
from collections.abc import Iterable


class InputError(Exception):
    """A file that cannot be used (read, segmented or scored); the message is one line and says why."""


def first_few(names: Iterable[str], most: int) -> str:
    """The first `most` names joined by commas, " ..." after them where there are more (a message's
    list of cases)."""
    names = list(names)
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def describe_error(exc: BaseException, max_chars: int | None = None) -> str:
    """'<ExceptionType>: <first line of its message>' for one-line error reports; with max_chars,
    shortened at a word's end to at most that many characters ('[...]' marking the cut)."""
    text = str(exc)
    line = f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"
    return line if max_chars is None else textwrap.shorten(line, max_chars)
