"""The error type of an unusable input file, and one-line error text."""
from __future__ import annotations


class InputError(Exception):
    """A file that cannot be used (read, segmented or scored); the message is one line and says why."""


def describe_error(exc: BaseException) -> str:
    """'<ExceptionType>: <first line of its message>' for one-line error reports."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"
