"""Rank teams the organisers' way, with challengeR's conventions: rank per case, then aggregate.

    flare-rank TEAM_DIR... [--name NAME ...] [--rules flare21|flare22|flare23]
        [--ties min|average] [--bootstrap 1000] [--seed 0] [--out leaderboard.csv] [--html leaderboard.html]
        [--json leaderboard.json]

Each TEAM_DIR is a folder written by `python -m evaluation.run` (results.csv and summary.json,
which carries the team's name, the rules year, the failure policy of the run and how its
efficiency was measured), or, to rank on accuracy alone (DSC and NSD: a validation phase with
predictions handed in as files), a folder of `flare-score` (metrics.csv and summary.json; a
run's accuracy/ is one), every folder of one kind. For every case
and every metric of the year (FLARE21: DSC, NSD, time, max GPU memory; FLARE22: DSC, NSD, time, and
the GPU and CPU areas at half weight; FLARE23: DSC, NSD, time, GPU area) the teams are ranked, 1 =
best, in three tiers: measured values first, then values not measured (NaN on a case that ran),
then failed cases and cases missing from a team's folder (under the "official" failure policy, as
the organisers ranked them, failed cases are ranked by their values instead, a case given the
year's stuck values, Penalised, by those). Ties share the minimum rank (challengeR's default;
`--ties average` gives the mean). Each team's ranks are averaged over all cases per metric, then
over the metrics with the year's weights (a metric no team has measured on a case that ran is left
out, with a notice: failed cases alone would rank the failures twice), and teams are placed by that
score (ties share the better place).
The bootstrap over cases says how often each team keeps its place. DSC and NSD are a case's means
over organs. Refuses folders of different rules years or failure policies, runs whose efficiency
was measured differently (usage.MEASUREMENT_SETTINGS: areas, sampling interval, GPU, timeout), and
two teams of one name (give `--name`). `--json` writes the leaderboard with all that decided it.
Exit code 0: ranked; 2: usage error (one line naming the folder).
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

from evaluation import pages
from evaluation.report import json_number
from evaluation.rules import RULES, get_rules
from evaluation.usage import (
    DEFAULT_FAILURE_POLICY,
    FAILURE_POLICIES,
    is_failed,
    measurement_differences,
    recorded_measurement,
)
from flare_common import cli
from flare_common.files import write_atomic

HIGHER_IS_BETTER = {"DSC", "NSD"}
COLUMN = {"DSC": "DSC_mean", "NSD": "NSD_mean"}  # other metrics are results.csv columns of their name
TIES = ("min", "average")
DEFAULT_TIES = "min"
MEASURED, NOT_MEASURED, FAILED = 0, 1, 2  # tiers, best first
FAILED_RANKED = {"penalised": "last", "official": "by their values (official policy)"}  # how failed cases rank


class RankError(Exception):
    """A team folder that cannot be ranked (with the others); one line naming the folder."""


@dataclass
class Team:
    """One team's run: its name, folder, rules year, failure policy and per-case results."""

    name: str
    folder: Path
    rules: str
    failures: str
    results: pd.DataFrame
    measurement: dict | None = None  # how its efficiency was measured (usage.recorded_measurement)
    accuracy_only: bool = False  # a flare-score folder: DSC and NSD, no efficiency


@dataclass
class Ranking:
    """The leaderboard (`table`, best first), the per-case ranks per metric (cases x teams), the
    metrics used and left out, and the notices (one line each) an organiser must read."""

    table: pd.DataFrame
    per_case: dict[str, pd.DataFrame]
    weights: dict[str, float]
    left_out: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    ties: str = DEFAULT_TIES


def case_ranks(values: np.ndarray, tiers: np.ndarray, higher_is_better: bool, ties: str = DEFAULT_TIES) -> np.ndarray:
    """Ranks (1 = best) of the teams on one case: by tier, then by value within the measured tier;
    equal (tier, value) pairs and everything in the lower tiers are ties, given their minimum or
    average rank."""
    key = np.where(tiers == MEASURED, -values if higher_is_better else values, 0.0)
    _, codes = np.unique(np.rec.fromarrays([tiers, key]), return_inverse=True)
    return rankdata(codes.ravel(), method=ties)


def _tiers(frame: pd.DataFrame, cases: list[str], column: str, policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, tiers, stuck) of one team and metric over the cases (a case it lacks is FAILED;
    stuck: the cases given the year's stuck values, which rank by them under the official policy)."""
    indexed = frame.drop_duplicates("Name").set_index("Name")
    values = pd.to_numeric(indexed[column], errors="coerce").reindex(cases).to_numpy(dtype=np.float64) \
        if column in indexed else np.full(len(cases), np.nan)
    present = np.asarray([c in indexed.index for c in cases])
    status = indexed["Status"].reindex(cases) if "Status" in indexed else pd.Series("ok", index=cases)
    failed = status.map(is_failed).to_numpy(dtype=bool) & present
    stuck = indexed["Penalised"].reindex(cases).map(is_true).to_numpy(dtype=bool) if "Penalised" in indexed \
        else np.zeros(len(cases), bool)
    tiers = np.where(np.isfinite(values), MEASURED, NOT_MEASURED)
    if policy == "penalised":
        tiers = np.where(failed | stuck, FAILED, tiers)
    return values, np.where(present, tiers, FAILED), stuck & present


def is_true(value) -> bool:
    """A results.csv flag read back by pandas (True, "True", 1) as a bool; NaN and others are False."""
    return str(value) in ("True", "1", "1.0")


def _failed_or_missing(frame: pd.DataFrame, cases: list[str]) -> int:
    """How many of the cases failed for a team or are missing from its results."""
    status = frame.drop_duplicates("Name").set_index("Name").get("Status")
    if status is None:
        return len(set(cases) - set(frame["Name"]))
    return int(status.reindex(cases).map(is_failed).sum())  # a missing case reads NaN: failed


SCORE_DECIMALS = 9  # scores are means of ranks: equal ones may differ in the last bits by the order of summing


def _positions(scores: np.ndarray) -> np.ndarray:
    """Places from scores (lower is better), ties sharing the better place; along the last axis.
    Scores equal to SCORE_DECIMALS decimals tie (1.1 and 1.0999999999999999 are one score)."""
    return rankdata(np.round(scores, SCORE_DECIMALS), method="min", axis=-1).astype(int)


def rank_teams(per_case: dict[str, pd.DataFrame], weights: dict[str, float], ties: str = DEFAULT_TIES,
               policy: str = DEFAULT_FAILURE_POLICY) -> Ranking:
    """Rank teams from their per-case results (Name, Status, DSC_mean, NSD_mean and the efficiency
    columns): per case and metric, then averaged over all cases, then weighted over metrics."""
    if ties not in TIES or policy not in FAILURE_POLICIES:
        raise ValueError(f"ties must be one of {TIES} and policy one of {FAILURE_POLICIES}")
    teams = list(per_case)
    cases = sorted(set().union(*(set(t["Name"]) for t in per_case.values())))
    notices = []
    for team, frame in per_case.items():
        missing = sorted(set(cases) - set(frame["Name"]))
        if missing:
            notices.append(f"{team}: {len(missing)} case(s) missing from its results, ranked last: "
                           + ", ".join(missing))
        failed = frame.get("Status", pd.Series("ok", index=frame.index)).map(is_failed)
        if failed.any():
            stuck = int(frame.get("Penalised", pd.Series(False, index=frame.index))[failed].map(is_true).sum())
            how = FAILED_RANKED[policy] + (f", {stuck} by the year's stuck values" if stuck and policy == "official" else "")
            notices.append(f"{team}: {int(failed.sum())} failed case(s) ranked {how}: "
                           + ", ".join(sorted(frame.loc[failed, "Name"])))
    ranks: dict[str, pd.DataFrame] = {}
    left_out = []
    for metric in weights:
        column = COLUMN.get(metric, metric)
        pairs = {team: _tiers(per_case[team], cases, column, policy) for team in teams}
        values = np.column_stack([pairs[t][0] for t in teams])
        tiers = np.column_stack([pairs[t][1] for t in teams])
        stuck = np.column_stack([pairs[t][2] for t in teams])
        # measured on no case that ran (its stuck values are no measurement): the failures alone
        # would rank the teams, a second time, and a stuck value would beat every unmeasured one
        if (tiers == NOT_MEASURED).any() and not ((tiers == MEASURED) & ~stuck).any():
            left_out.append(metric)
            notices.append(f"{metric}: measured for no team (e.g. no NVML): left out of the ranking, "
                           "the other metrics' weights renormalised")
            continue
        for j, team in enumerate(teams):
            unmeasured = int((tiers[:, j] == NOT_MEASURED).sum())
            if unmeasured:
                notices.append(f"{team}: {metric} not measured on {unmeasured} case(s): "
                               "ranked after the measured values")
        matrix = np.vstack([case_ranks(values[i], tiers[i], metric in HIGHER_IS_BETTER, ties)
                            for i in range(len(cases))])
        ranks[metric] = pd.DataFrame(matrix, index=cases, columns=teams)
    used = {m: w for m, w in weights.items() if m in ranks}
    if not used:
        raise ValueError("no metric is measured for any team: nothing to rank on")
    table = pd.DataFrame({"team": teams})
    for metric in used:
        table[f"rank_{metric}"] = ranks[metric].mean(axis=0).to_numpy()
    total = sum(used.values())
    table["score"] = sum(w * table[f"rank_{m}"] for m, w in used.items()) / total
    table["position"] = _positions(table["score"].to_numpy())
    table["cases"] = len(cases)
    table["failed_or_missing"] = [_failed_or_missing(per_case[t], cases) for t in teams]
    table = table.sort_values(["position", "team"], kind="stable").reset_index(drop=True)
    return Ranking(table, ranks, used, left_out, notices, ties)


def bootstrap(ranking: Ranking, samples: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, float]:
    """Rank stability: the cases are drawn with replacement `samples` times and the teams placed
    again from the same per-case ranks. Per team: how often it keeps its place (kept_position,
    0-1) and its 5th and 95th percentile place; and the mean over samples of Kendall's tau between
    the bootstrap's and the original scores (1: always the same order; NaN where undefined)."""
    teams = list(ranking.table["team"])
    matrices = [ranking.per_case[m][teams].to_numpy() for m in ranking.weights]
    n_cases = matrices[0].shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_cases, size=(samples, n_cases))
    total = sum(ranking.weights.values())
    scores = sum(w * m[draws].mean(axis=1) for w, m in zip(ranking.weights.values(), matrices)) / total
    places = _positions(scores)
    original = ranking.table["position"].to_numpy()
    base_scores = ranking.table["score"].to_numpy()
    taus = np.array([kendalltau(base_scores, s).statistic for s in scores], dtype=np.float64)
    stability = pd.DataFrame({
        "team": teams,
        "kept_position": (places == original).mean(axis=0),
        "position_p5": np.percentile(places, 5, axis=0, method="lower"),
        "position_p95": np.percentile(places, 95, axis=0, method="higher"),
    })
    return stability, float(np.nanmean(taus)) if np.isfinite(taus).any() else float("nan")


def load_team(folder: Path, name: str | None = None) -> Team:
    """A team's run from its folder (evaluation.run's, or flare-score's for accuracy alone);
    RankError when it is no such folder or its files are bad."""
    if not folder.is_dir():
        raise RankError(f"{folder}: not a folder")
    summary = folder / "summary.json"
    accuracy_only = not (folder / "results.csv").is_file() and (folder / "metrics.csv").is_file()
    results = folder / ("metrics.csv" if accuracy_only else "results.csv")
    for path in (results, summary):
        if not path.is_file():
            raise RankError(f"{folder}: no {path.name} (a folder of flare-run, or of flare-score to rank on accuracy "
                            "alone)")
    try:
        doc = json.loads(summary.read_text())
    except (ValueError, OSError) as exc:
        raise RankError(f"{summary}: unreadable ({type(exc).__name__}: {exc})") from None
    try:
        frame = pd.read_csv(results)
    except (ValueError, OSError) as exc:
        raise RankError(f"{results}: unreadable ({type(exc).__name__}: {exc})") from None
    # runs from before the failure policy existed gave stuck values to timeouts only: "official"
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), str) or doc["rules"] not in RULES \
            or doc.get("failures", "official") not in FAILURE_POLICIES or not isinstance(doc.get("team", ""), str):
        raise RankError(f"{summary}: no known rules year and failure policy, or a team name that is no text")
    rules = get_rules(doc["rules"])
    columns = rules.metric_columns() if accuracy_only else [COLUMN.get(m, m) for m in rules.efficiency.rank_weights]
    problem = _results_problem(frame, columns)
    if problem:
        raise RankError(f"{results}: {problem}")
    return Team(name or doc.get("team") or folder.resolve().name, folder, doc["rules"],
                doc.get("failures", "official"), rules.case_means(frame) if accuracy_only else frame,
                None if accuracy_only else recorded_measurement(folder, doc), accuracy_only)


def _results_problem(frame: pd.DataFrame, columns: list[str]) -> str | None:
    """Why a team's results.csv (or metrics.csv) cannot be ranked on these columns: case names
    missing or repeated, or a column absent or not numbers; None when it can."""
    names = frame.get("Name")
    if names is None or names.isna().any() or not names.map(lambda n: isinstance(n, str)).all():
        return "a Name column with every case's name is needed"
    if names.duplicated().any():
        return f"cases listed twice: {', '.join(sorted(set(names[names.duplicated()])))}"
    for column in columns:
        if column not in frame:
            return f"no {column} column"
        if not pd.api.types.is_numeric_dtype(frame[column]):
            return f"{column} holds values that are not numbers"
    return None


def check_teams(teams: list[Team], rules: str | None) -> tuple[str, str]:
    """The common (rules year, failure policy) of the teams; RankError when they differ, when
    `rules` is given and differs, when folders of flare-run and of flare-score are mixed, when
    the runs' efficiency was measured differently, or when two teams share a name."""
    years = {t.rules for t in teams}
    if len(years) > 1:
        raise RankError("folders were run under different rules years: "
                        + ", ".join(f"{t.folder} ({t.rules})" for t in teams))
    year = years.pop()
    if rules and rules != year:
        raise RankError(f"--rules {rules}, but the folders were run under {year}: run them again under {rules}")
    policies = {t.failures for t in teams}
    if len(policies) > 1:
        raise RankError("folders were run under different failure policies: "
                        + ", ".join(f"{t.folder} ({t.failures})" for t in teams))
    if len({t.accuracy_only for t in teams}) > 1:
        raise RankError("folders of flare-run and of flare-score (accuracy alone: "
                        + ", ".join(str(t.folder) for t in teams if t.accuracy_only)
                        + "): give each run's accuracy/ folder to rank all on accuracy alone")
    differences = measurement_differences({str(t.folder): t.measurement for t in teams})
    if differences:
        raise RankError("the runs' efficiency was measured differently, so their figures do not compare ("
                        + "; ".join(differences) + "): run them again alike")
    seen: dict[str, Path] = {}
    for team in teams:
        if team.name in seen:
            raise RankError(f"two teams named {team.name!r}: {seen[team.name]} and {team.folder} (give --name)")
        seen[team.name] = team.folder
    return year, policies.pop()


def leaderboard(ranking: Ranking, stability: pd.DataFrame | None) -> pd.DataFrame:
    """The leaderboard table: position, team, score, mean rank per metric, case counts, stability."""
    table = ranking.table
    if stability is not None:
        table = table.merge(stability, on="team", how="left")
    first = ["position", "team", "score"]
    return table[first + [c for c in table.columns if c not in first]]


def leaderboard_html(board: pd.DataFrame, ranking: Ranking, year: str, policy: str, samples: int,
                     tau: float) -> str:
    """The leaderboard as a static page: the table, how it was ranked, and every notice."""
    weights = ", ".join(f"{m} x{w:g}" for m, w in ranking.weights.items())
    body = (f"<h1>Leaderboard ({html.escape(year)})</h1>"
            f"<p>Ranked per case and metric (ties: {ranking.ties}; not measured after measured; missing cases last; "
            f"failed cases {FAILED_RANKED[policy]}), mean rank "
            f"over cases per metric, weighted mean over metrics ({html.escape(weights)}); lower score is better. "
            + (f"Stability: {samples} bootstrap samples of the cases; kept_position is how often a team kept its "
               f"place; mean Kendall's tau to the ranking {pages.number(tau, 3) or 'undefined'}." if samples else "")
            + "</p>"
            + pages.table(board)
            + "<h2>Notices</h2>" + pages.bullet_list([html.escape(n) for n in ranking.notices]))
    return pages.page(f"FLARE leaderboard ({year})", body)


def leaderboard_json(board: pd.DataFrame, ranking: Ranking, teams: list[Team], year: str, policy: str,
                     args: argparse.Namespace, tau: float) -> str:
    """The leaderboard as JSON text (NaN as null) with what decided it: the year, the failure
    policy, ties, the metrics' weights and those left out, the bootstrap, each team's folder and
    how its efficiency was measured, and every notice."""
    doc = {
        "rules": year, "failure_policy": policy, "ties": ranking.ties, "weights": ranking.weights,
        "left_out": ranking.left_out, "failed_cases_ranked": FAILED_RANKED[policy],
        "bootstrap": {"samples": args.bootstrap, "seed": args.seed,
                      "mean_kendall_tau": json_number(tau) if args.bootstrap else None},
        "teams": [{"team": t.name, "folder": str(t.folder), "accuracy_only": t.accuracy_only,
                   "measurement": t.measurement} for t in teams],
        "notices": ranking.notices,
        "leaderboard": [{key: json_number(value) if isinstance(value, float) else value
                         for key, value in row.items()} for row in board.to_dict("records")],
    }
    return json.dumps(doc, indent=2, default=int) + "\n"  # default: NumPy's integers


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m evaluation.rank", __doc__.split("\n")[0], [
        "flare-rank teams/alpha teams/beta teams/gamma --out leaderboard.csv --html leaderboard.html",
        "flare-rank run1 run2 --name alpha beta --ties average --bootstrap 0"])
    parser.add_argument("folders", nargs="+", type=Path, metavar="TEAM_DIR",
                        help="result folders of flare-run (evaluation.run), one per team, at least two")
    parser.add_argument("--name", nargs="+", help="the teams' names, one per folder (default: each run's --name)")
    parser.add_argument("--rules", choices=sorted(RULES), help="the year to rank under (default: the folders')")
    parser.add_argument("--ties", choices=TIES, default=DEFAULT_TIES,
                        help="per-case ties share the minimum (as challengeR) or the average rank (default %(default)s)")
    parser.add_argument("--bootstrap", type=cli.at_least(0), default=1000, metavar="N",
                        help="bootstrap samples of the cases for the stability (default 1000; 0: none)")
    parser.add_argument("--seed", type=cli.at_least(0), default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--out", type=Path, metavar="FILE.csv", help="write the leaderboard as CSV here (default: none)")
    parser.add_argument("--html", type=Path, metavar="FILE.html",
                        help="write the leaderboard as an HTML page here (default: none)")
    parser.add_argument("--json", type=Path, metavar="FILE.json",
                        help="write the leaderboard as JSON here, with the year, the policies, the metrics' weights, "
                             "what was left out and every notice (default: none)")
    args = parser.parse_args(argv)
    if args.name and len(args.name) != len(args.folders):
        parser.error(f"--name gives {len(args.name)} name(s) for {len(args.folders)} folder(s)")
    if len(args.folders) < 2:
        parser.error("need at least two team folders")
    cli.refuse_unwritable(parser, "--out", args.out, folder=False)
    cli.refuse_unwritable(parser, "--html", args.html, folder=False)
    cli.refuse_unwritable(parser, "--json", args.json, folder=False)
    try:
        teams = [load_team(f, args.name[i] if args.name else None) for i, f in enumerate(args.folders)]
        year, policy = check_teams(teams, args.rules)
        weights = get_rules(year).efficiency.rank_weights
        if teams[0].accuracy_only:
            weights = {metric: weight for metric, weight in weights.items() if metric in HIGHER_IS_BETTER}
        ranking = rank_teams({t.name: t.results for t in teams}, weights, args.ties, policy)
    except (RankError, ValueError) as exc:
        parser.error(str(exc))
    if teams[0].accuracy_only:
        ranking.notices.insert(0, "ranked on accuracy alone (DSC, NSD): the folders are flare-score's, without "
                                  "efficiency results")
    stability, tau = bootstrap(ranking, args.bootstrap, args.seed) if args.bootstrap else (None, float("nan"))
    board = leaderboard(ranking, stability)
    if args.out:
        write_atomic(args.out, board.to_csv(index=False))
    if args.html:
        write_atomic(args.html, leaderboard_html(board, ranking, year, policy, args.bootstrap, tau))
    if args.json:
        write_atomic(args.json, leaderboard_json(board, ranking, teams, year, policy, args, tau))
    print(board.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.bootstrap:
        print(f"stability: {args.bootstrap} bootstrap samples of the cases, mean Kendall's tau "
              + (f"{tau:.3f}" if np.isfinite(tau) else "undefined (every sample ties the teams alike)"))
    for notice in ranking.notices:
        print(f"notice: {notice}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
