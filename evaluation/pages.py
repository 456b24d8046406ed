"""Static HTML pages of results (report.html, the leaderboard): plain numbers, tables that fit.

Numbers are written in full with a fixed number of decimals per kind of column (never `1.021e+04`),
thousands separated by commas; NaN is an empty cell. Table headers may break after an underscore
and long cells wrap, so that a page reads at 1,400 px without sideways scrolling.
"""
from __future__ import annotations

import html
import math
import re
from collections.abc import Callable

import pandas as pd

from evaluation.usage import OFFICIAL_DECIMALS

# (pattern on the column name, decimals), first match wins
DECIMALS: list[tuple[str, int]] = [
    (r"^rank_|^score$|kendall|kept", 3),
    (r"(^|_)(DSC|NSD)($|_|-)|^DSC|^NSD", 4),
    (r"MeanInterval_s", 4),
    (r"Time|_s$", 2),
    (r"Mem|RAM|MB|AUC|CPU|pct|Samples|cases|position|missing|^n$", 0),
]
STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1360px;line-height:1.35}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em 0}
td,th{border-bottom:1px solid #ddd;padding:2px 5px;text-align:right;vertical-align:top}
th{background:#f4f4f4;font-weight:600}
td.text,th.text{text-align:left;max-width:28em;overflow-wrap:break-word}
td:first-child{white-space:nowrap}
tr.bad td{background:#fff0f0}
code{overflow-wrap:anywhere}
img{max-width:100%}
li{margin:0.15em 0}"""


def decimals_for(column: str) -> int | None:
    """How many decimals a column's numbers get: the official efficiency figures as the organisers'
    CSV rounds them (usage.OFFICIAL_DECIMALS), others by DECIMALS; None: not a numeric column we know."""
    if column in OFFICIAL_DECIMALS:
        return OFFICIAL_DECIMALS[column]
    for pattern, decimals in DECIMALS:
        if re.search(pattern, column):
            return decimals
    return None


def number(value, decimals: int = 4) -> str:
    """A plain number: fixed decimals, comma thousands, never an exponent; '' for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:,.{decimals}f}"
    return str(value)


def _header(column: str) -> str:
    return html.escape(column).replace("_", "_<wbr>")


def table(frame: pd.DataFrame, links: dict[str, Callable[[object], str | None]] | None = None,
          bad_rows: pd.Series | None = None, headers: dict[str, str] | None = None) -> str:
    """An HTML table of a frame: numbers formatted by column kind, text cells left-aligned and
    wrapped; links maps a column to a function giving each cell's href (None: no link);
    bad_rows (bool per row) shades rows; headers renames columns for display."""
    links, headers = links or {}, headers or {}
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns}
    head = "".join(f'<th class="{"num" if numeric[c] else "text"}">{_header(headers.get(c, c))}</th>'
                   for c in frame.columns)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for column in frame.columns:
            value = row[column]
            if numeric[column]:
                decimals = decimals_for(column)
                text = number(value, 4 if decimals is None else decimals)
            else:
                text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
            cell = html.escape(text)
            href = links[column](value) if column in links and text else None
            if href:
                cell = f'<a href="{html.escape(href)}">{cell}</a>'
            cells.append(f'<td class="{"num" if numeric[column] else "text"}">{cell}</td>')
        bad = bad_rows is not None and bool(bad_rows.iloc[i])
        rows.append(f'<tr{" class=bad" if bad else ""}>{"".join(cells)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def bullet_list(items: list[str], empty: str = "none") -> str:
    """An HTML list of already-escaped items (or one line saying `empty`)."""
    if not items:
        return f"<p>{html.escape(empty)}</p>"
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def page(title: str, body: str) -> str:
    """A whole static page."""
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head><body>\n{body}\n</body></html>\n")
