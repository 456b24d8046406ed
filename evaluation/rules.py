"""The FLARE scoring rules of each year: organs (flare_common/labels.py), column names, rounding,
efficiency limits.

This module is the one place for these facts beside the organ tables; everything else reads them
from here. Sources: the organisers' evaluation scripts of 2021, 2022 and 2023 (see docs/scoring.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from flare_common.labels import FLARE21_ORGANS, FLARE22_ORGANS, FLARE23_ORGANS, Organ


@dataclass(frozen=True)
class EfficiencyRules:
    """How a year measured and limited efficiency (docs/efficiency.md).

    gpu_max: "stable" (the largest NVML sample seen in more than stable_fraction of the samples)
    or "plain" (the maximum); gpu_free_mb: memory not counted in the GPU area (FLARE22's 2 GB);
    set_*: limits for a whole test set of set_cases cases (None: no such limit);
    stuck: the values a case that never finishes is given (None: the measured values stand);
    rank_weights: metric -> weight when ranking teams; docker_args: extra `docker run` options.
    """

    gpu_max: str
    gpu_free_mb: float = 0.0
    stable_fraction: float = 0.02
    set_cases: int | None = None
    set_time_s: float | None = None
    set_gpu_mb: float | None = None
    set_ram_mb: float | None = None
    stuck: dict[str, float] | None = None
    rank_weights: dict[str, float] | None = None
    docker_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rules:
    """A year's scoring rules.

    nsd_dsc_floor: NSD is set to 0 when DSC is below it (None: NSD always computed).
    official_round: the number of decimals the official script rounds per-case values to
    (None: not rounded).
    column_style: "interleaved" (FLARE21: DSC_1, NSD-1mm_1, DSC_2, ...) or "blocked"
    (FLARE22/23: all <key>_DSC columns, then all <key>_NSD columns).
    official_summary: the official script also reports each column's mean, rounded, and the
    organs' mean of those (FLARE23's scores.txt; summary.json's official_scores).
    """

    name: str
    organs: tuple[Organ, ...]
    nsd_dsc_floor: float | None
    official_round: int | None
    column_style: str
    efficiency: EfficiencyRules
    official_summary: bool = False

    @property
    def max_label(self) -> int:
        return max(o.label for o in self.organs)

    def dsc_column(self, organ: Organ) -> str:
        if self.column_style == "interleaved":
            return f"DSC_{organ.label}"
        return f"{organ.key}_DSC"

    def nsd_column(self, organ: Organ) -> str:
        if self.column_style == "interleaved":
            return f"NSD-{organ.tolerance_mm:g}mm_{organ.label}"
        return f"{organ.key}_NSD"

    def metric_columns(self) -> list[str]:
        """The official metric column names in the official order (without `Name`)."""
        if self.column_style == "interleaved":
            return [c for o in self.organs for c in (self.dsc_column(o), self.nsd_column(o))]
        return [self.dsc_column(o) for o in self.organs] + [self.nsd_column(o) for o in self.organs]

    def case_means(self, metrics):
        """Name, DSC_mean and NSD_mean per case of a metrics table (a pandas DataFrame with Name
        and the metric columns): the means over the organs counted in the organ mean, NaN
        (not scored) left out."""
        organs = [o for o in self.organs if o.in_mean]
        return metrics[["Name"]].assign(DSC_mean=metrics[[self.dsc_column(o) for o in organs]].mean(axis=1),
                                        NSD_mean=metrics[[self.nsd_column(o) for o in organs]].mean(axis=1))


RULES: dict[str, Rules] = {
    "flare21": Rules(
        name="flare21",
        organs=FLARE21_ORGANS,
        nsd_dsc_floor=None,
        official_round=None,
        column_style="interleaved",
        efficiency=EfficiencyRules(
            gpu_max="stable", set_cases=100, set_time_s=6 * 3600, set_gpu_mb=10 * 1024,
            rank_weights={"DSC": 1, "NSD": 1, "Time": 1, "MaxGPU_Mem": 1}),
    ),
    "flare22": Rules(
        name="flare22",
        organs=FLARE22_ORGANS,
        nsd_dsc_floor=0.2,
        official_round=4,
        column_style="blocked",
        efficiency=EfficiencyRules(
            gpu_max="stable", gpu_free_mb=2048, set_cases=50, set_time_s=3 * 3600, set_ram_mb=28 * 1024,
            stuck={"Time": 3600, "AUC_GPU_Time": 3600 * (10240 - 2048), "AUC_CPU_Time": 360000},
            rank_weights={"DSC": 1, "NSD": 1, "Time": 1, "AUC_GPU_Time": 0.5, "AUC_CPU_Time": 0.5}),
    ),
    "flare23": Rules(
        name="flare23",
        organs=FLARE23_ORGANS,
        nsd_dsc_floor=0.2,
        official_round=4,
        column_style="blocked",
        efficiency=EfficiencyRules(
            gpu_max="plain", rank_weights={"DSC": 1, "NSD": 1, "Time": 1, "AUC_GPU_Time": 1},
            docker_args=("--shm-size=28gb", "-m", "28G")),
        official_summary=True,
    ),
}

DEFAULT_RULES = "flare21"


def get_rules(name: str) -> Rules:
    """The rules of one year by name (flare21, flare22, flare23); ValueError for others."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rules {name!r}; choose one of {', '.join(RULES)}") from None
