"""The FLARE organ tables: each year's scored structures, their label values, names and tolerances.

The one place for these facts (sources: the organisers' evaluation scripts of 2021, 2022 and 2023,
see docs/scoring.md). evaluation/rules.py builds each year's scoring rules on them; the submission
reads the FLARE21 label names from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organ:
    """One scored structure.

    label: its value in the label map; key: the organisers' short name used in column names;
    tolerance_mm: the NSD tolerance in millimetres; slab: scored only inside the axial extent of
    the ground truth (aorta, IVC, oesophagus); in_mean: counted in the mean over organs.
    """

    label: int
    name: str
    key: str
    tolerance_mm: float
    slab: bool = False
    in_mean: bool = True


FLARE21_ORGANS = (
    Organ(1, "liver", "1", 1),
    Organ(2, "kidney", "2", 1),
    Organ(3, "spleen", "3", 1),
    Organ(4, "pancreas", "4", 1),
)
FLARE22_ORGANS = (
    Organ(1, "liver", "Liver", 5),
    Organ(2, "right kidney", "RK", 3),
    Organ(3, "spleen", "Spleen", 3),
    Organ(4, "pancreas", "Pancreas", 5),
    Organ(5, "aorta", "Aorta", 2, slab=True),
    Organ(6, "inferior vena cava", "IVC", 2, slab=True),
    Organ(7, "right adrenal gland", "RAG", 2),
    Organ(8, "left adrenal gland", "LAG", 2),
    Organ(9, "gallbladder", "Gallbladder", 2),
    Organ(10, "esophagus", "Esophagus", 3, slab=True),
    Organ(11, "stomach", "Stomach", 5),
    Organ(12, "duodenum", "Duodenum", 7),
    Organ(13, "left kidney", "LK", 3),
)
FLARE23_ORGANS = FLARE22_ORGANS + (Organ(14, "lesion", "Tumor", 2, in_mean=False),)
ORGANS: dict[str, tuple[Organ, ...]] = {"flare21": FLARE21_ORGANS, "flare22": FLARE22_ORGANS, "flare23": FLARE23_ORGANS}


def label_names(year: str) -> dict[int, str]:
    """Label value -> organ name of a year's table (KeyError for an unknown year)."""
    return {organ.label: organ.name for organ in ORGANS[year]}
