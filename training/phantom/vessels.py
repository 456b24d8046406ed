"""Vessels as tubes: aorta, IVC, renal and mesenteric vessels, the portal and splenic veins, and the
hepatic veins and portal branches inside the liver.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.phantom.atlas import HEPATIC_VEINS, PORTAL_BRANCHES
from training.phantom.fields import Part, Tube, spline_tube, tube_part
from training.phantom.organs import Frame, kidney_hilum, pancreas_body_and_tail, spleen_hilum_point, splenic_vein
from training.phantom.priors import LIVER
from training.phantom.skeleton import Spine, spine_y, vertebra_size


def _aorta(spine: Spine, rng: np.random.Generator) -> tuple[Tube, list[Tube], np.ndarray]:
    """Aorta (descending thoracic, then anterior-left of the spine down to the bifurcation), the
    common and external iliac arteries, and the spine's front line y(z) used by the other vessels."""
    p = spine.pitch
    z = np.array([320.0, 220.0, 150.0, 90.0, 40.0, -10.0, -60.0]) + spine.z0
    z = np.append(z, spine.z0 - 3.0 * p)
    front = spine_y(spine, z) + vertebra_size(spine, z)[1]
    r = np.array([13.0, 13.0, 12.5, 12.0, 11.0, 10.5, 10.0, 9.5]) * rng.uniform(0.85, 1.15)
    x = np.array([-25.0, -24.0, -20.0, -15.0, -13.0, -11.0, -8.0, -4.0]) + rng.normal(0.0, 3.0)
    y = front + r + np.array([-28.0, -22.0, -8.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    aorta = spline_tube(np.stack([x, y, z], axis=1), r, step=6.0)
    bif = aorta.points[-1]
    iliacs = [spline_tube([bif, [s * 25.0, bif[1] - 3, bif[2] - 40], [s * 50.0, bif[1] - 5, bif[2] - 95],
                           [s * 65.0, bif[1] + 10, bif[2] - 160]], [8.0, 7.0, 6.5, 6.0], step=5.0)
              for s in (1.0, -1.0)]
    return aorta, iliacs, np.stack([z, front], axis=1)


def _front(spine_front: np.ndarray, z: float) -> float:
    """y (mm) of the front of the vertebral bodies at height z."""
    return float(np.interp(z, spine_front[::-1, 0], spine_front[::-1, 1]))


def _ivc(spine_front: np.ndarray, spine: Spine, liver: Frame, rng: np.random.Generator) -> tuple[Tube, list[Tube]]:
    """The IVC (flattened, right of the aorta, through the back of the liver to the heart) and the
    iliac veins."""
    z = spine.z0 + np.array([-100.0, -60.0, -20.0, 20.0, 60.0, 100.0, 130.0, 165.0])
    x = np.array([20.0, 22.0, 24.0, 26.0, 28.0, 25.0, 18.0, 10.0]) + rng.normal(0.0, 3.0)
    y = np.array([_front(spine_front, v) for v in z]) + np.array([12.0, 13.0, 14.0, 16.0, 22.0, 28.0, 36.0, 45.0])
    top = liver.to_world([HEPATIC_VEINS[0][0][0]])[0]
    y[5], x[5] = 0.5 * (y[5] + top[1]), 0.5 * (x[5] + top[0])
    ivc = spline_tube(np.stack([x, y, z], axis=1), np.full(len(z), 10.0), step=6.0, stretch=(1.3, 0.85, 1.0))
    low = ivc.points[0]
    iliacs = [spline_tube([low, [s * 35.0, low[1] - 6, low[2] - 45], [s * 55.0, low[1] - 8, low[2] - 100],
                           [s * 62.0, low[1] + 5, low[2] - 150]], [9.0, 8.5, 8.0, 7.5], step=5.0)
              for s in (1.0, -1.0)]
    return ivc, iliacs


def _nearest(tube: Tube, z: float) -> np.ndarray:
    """The tube's centre-line point nearest to height z (mm)."""
    return tube.points[int(np.argmin(np.abs(tube.points[:, 2] - z)))]


def _renal_vessels(kidneys: Sequence[Frame], aorta: Tube, ivc: Tube) -> tuple[list[Tube], list[Tube]]:
    """Renal veins (to the IVC; the left one crossing in front of the aorta, under the SMA) and
    renal arteries (from the aorta; the right one behind the IVC)."""
    veins, arteries = [], []
    for frame in kidneys:
        hilum = kidney_hilum(frame)
        to_ivc = _nearest(ivc, hilum[2] + 5.0)
        if hilum[0] < 0:
            in_front = _nearest(aorta, hilum[2] + 5.0) + (0.0, 16.0, 0.0)
            vein = [hilum, 0.5 * (hilum + in_front), in_front, to_ivc]
        else:
            vein = [hilum, 0.5 * (hilum + to_ivc), to_ivc]
        veins.append(spline_tube(vein, np.linspace(4.5, 6.0, len(vein))))
        root = _nearest(aorta, hilum[2] + 12.0)
        behind = 0.5 * (root + hilum) - (0.0, 10.0 if hilum[0] > 0 else 0.0, 0.0)
        arteries.append(spline_tube([root, behind, hilum], [3.5, 3.0, 2.8]))
    return veins, arteries


def _mesenteric_vessels(aorta: Tube, confluence: np.ndarray, spleen: Frame,
                        hollow: float) -> tuple[Tube, Tube, Tube]:
    """The superior mesenteric artery and vein and the (tortuous) splenic artery from the celiac trunk."""
    smv = spline_tube([confluence + (4.0, 4.0, -130.0), confluence + (4.0, 6.0, -60.0), confluence], [5.0, 5.5, 6.5])
    sma_root = _nearest(aorta, confluence[2] - 5.0) + (3.0, 9.0, 0.0)
    sma = spline_tube([sma_root, sma_root + (3.0, 20.0, -20.0), sma_root + (6.0, 26.0, -60.0),
                       sma_root + (8.0, 26.0, -130.0)], [4.5, 4.0, 3.5, 3.0])
    celiac = _nearest(aorta, confluence[2] + 25.0) + (0.0, 8.0, 0.0)
    spleen_hilum = spleen_hilum_point(spleen, hollow, 0.1)
    wiggle = np.linspace(celiac, spleen_hilum, 12) + (0.0, 0.0, 10.0)
    wiggle[1:-1, 1] += 8.0 * np.sin(np.linspace(0, 5 * np.pi, 12))[1:-1]
    splenic = spline_tube(np.concatenate([[celiac], [celiac + (0, 14, 2)], wiggle[1:]]), [3.5] + [2.8] * 12)
    return sma, smv, splenic


def vessel_parts(rng: np.random.Generator, spine: Spine, liver: Frame, spleen: Frame, kidneys: list[Frame],
                  pancreas: Tube, spleen_hollow: float) -> list[Part]:
    """Aorta and branches, IVC and tributaries (the renal vessels too, where they cross the pancreas
    or enter a kidney's hilum), portal system, hepatic veins (labels cleared, except inside the
    liver, whose label the intrahepatic vessels keep); the splenic vessels end in the hilum of a
    spleen drawn with spleen_hollow (spleen_field)."""
    aorta, iliac_arteries, spine_front = _aorta(spine, rng)
    ivc, iliac_veins = _ivc(spine_front, spine, liver, rng)
    neck = pancreas_body_and_tail(pancreas).points[0]
    confluence = neck + (-4.0, -14.0, -2.0)  # of the splenic and superior mesenteric veins, behind the neck
    porta = liver.to_world([PORTAL_BRANCHES[0][0][0]])[0]
    portal = spline_tube([confluence, 0.5 * (confluence + porta) + (5.0, 0.0, 0.0), porta], [7.0, 7.0, 6.5])
    sma, smv, splenic_artery = _mesenteric_vessels(aorta, confluence, spleen, spleen_hollow)
    renal_veins, renal_arteries = _renal_vessels(kidneys, aorta, ivc)
    intrahepatic = [spline_tube(liver.to_world(path), np.linspace(*radii, len(path)))
                    for path, radii in PORTAL_BRANCHES + HEPATIC_VEINS]
    artery, vein, portal_vein = ((0.0, "artery"),), ((0.0, "vein"),), ((0.0, "portal vein"),)
    return [tube_part([aorta, *iliac_arteries, sma, splenic_artery], artery, label=0),
            tube_part([ivc, *iliac_veins], vein, label=0),
            tube_part(renal_veins, vein, label=0), tube_part(renal_arteries, artery, label=0),
            tube_part([portal, smv, splenic_vein(pancreas, confluence, spleen, spleen_hollow)], portal_vein, label=0),
            tube_part(intrahepatic[:len(PORTAL_BRANCHES)], portal_vein, within=LIVER),
            tube_part(intrahepatic[len(PORTAL_BRANCHES):], vein, within=LIVER)]
