"""One patient's anatomy from a random stream: every part, in the order they are painted."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from training.phantom.atlas import (
    GALLBLADDER,
    HIP_GAIN,
    LEFT_LOBE_TONGUE,
    LIVER_CENTRE,
    LIVER_LOBES,
    LIVER_REACH_MM,
    SPLEEN_RADII,
)
from training.phantom.body import Arms, arm_parts, body_parts, draw_body, table_part
from training.phantom.chest import chest_parts, draw_diaphragm, upper_chest_parts
from training.phantom.fields import Part, box_around, lobulated_tube_field, tube_box
from training.phantom.gut import gut_parts
from training.phantom.muscles import muscle_parts
from training.phantom.organs import (
    draw_fissures,
    draw_frame,
    draw_pancreas,
    fissure_field,
    gallbladder_field,
    grow_spleen,
    kidney_frame,
    kidney_parts,
    lesion_parts,
    liver_field,
    lobes_box,
    pancreas_body_and_tail,
    spleen_field,
    spleen_frame,
)
from training.phantom.priors import GUT_SPACE, LIVER, PANCREAS, SPLEEN
from training.phantom.scan import DOME_MM
from training.phantom.skeleton import (
    draw_pelvis,
    draw_spine,
    mean_crest,
    pelvic_organ_parts,
    pelvis_parts,
    rib_parts,
    rib_tubes,
    spine_parts,
)
from training.phantom.vessels import vessel_parts


def draw_anatomy(rng: np.random.Generator, pancreas_thickness: float = 1.0, fat_plane_mm: float = 0.0,
                 pelvic_organs: np.random.Generator | None = None, sinus_labelled: bool = False,
                 pancreas_head: float = 1.0, fissures: np.random.Generator | None = None,
                 arms: Arms | None = None, tongue: np.random.Generator | None = None,
                 spleen_growth: np.random.Generator | None = None, pelvis_labelled: bool = True) -> list[Part]:
    """One patient's anatomy as parts in painting order (depends only on the random stream), the
    pancreas's thickness scaled by pancreas_thickness (ATROPHIC_PANCREAS) and its head's length by
    pancreas_head (SHORT_PANCREAS_HEAD), where fat_plane_mm > 0, fat that thick around its body
    and tail that no gut enters (PANCREAS_FAT_PLANE_MM), with a stream for them, the pelvic
    organs, hip muscles and hips (pelvic_organ_parts), and the renal sinus fat labelled kidney
    where sinus_labelled (kidney_parts), and with a stream for them, the liver's fissures (draw_fissures)
    and a long left lobe (LEFT_LOBE_TONGUE), and a large spleen with the left kidney below it
    (grow_spleen); arms, if given, beside the trunk (arm_parts); the renal pelvis's urine left out
    of the kidney label without pelvis_labelled (kidney_parts)."""
    body, spine = draw_body(rng), draw_spine(rng)
    if pelvic_organs is not None:
        body = replace(body, hip_z=mean_crest(spine),
                       hip_gain=float(pelvic_organs.uniform(*HIP_GAIN)))
    diaphragm = draw_diaphragm(rng, spine)
    breath = diaphragm.right[2] - DOME_MM
    parts = table_part(rng, body) + body_parts(body, diaphragm.floor) + chest_parts(rng, body, diaphragm)
    parts += muscle_parts(rng, spine, body) + spine_parts(spine) + rib_parts(rib_tubes(body, spine, rng))
    pelvis = draw_pelvis(rng, spine)
    parts += pelvis_parts(pelvis, body)
    if pelvic_organs is not None:
        parts += pelvic_organ_parts(pelvic_organs, body, spine, pelvis)

    kidneys = [kidney_frame(rng, side, breath) for side in (1.0, -1.0)]
    liver = draw_frame(rng, np.asarray(LIVER_CENTRE) + (0.0, 0.0, breath), np.eye(3), LIVER_REACH_MM, angle_deg=6.0,
                        warp_mm=7.0, lobe_step=25.0, lobes_mm=3.0)
    gallbladder = None
    if rng.random() < GALLBLADDER[0]:
        gb_radii = np.asarray(GALLBLADDER[2]) * rng.uniform(0.7, 1.2)
        gallbladder = partial(gallbladder_field, frame=liver, centre=GALLBLADDER[1], radii=gb_radii)
    spleen, hollow = spleen_frame(rng, breath), 0.0
    pancreas, lobes, amplitude = draw_pancreas(rng, breath, pancreas_thickness, pancreas_head)
    if spleen_growth is not None:
        spleen, hollow, kidneys[1] = grow_spleen(spleen_growth, spleen, kidneys[1])

    liver_lobes = LIVER_LOBES
    if tongue is not None:
        liver_lobes += ((tuple(tongue.uniform(*r) for r in LEFT_LOBE_TONGUE[0]),
                         tuple(tongue.uniform(*r) for r in LEFT_LOBE_TONGUE[1]), 0.0),)
    parts.append(Part(partial(liver_field, frame=liver, body=body, diaphragm=diaphragm, spine=spine, kidney=kidneys[0],
                              gallbladder=gallbladder, lobes=liver_lobes), lobes_box(liver, liver_lobes), ((0.0, "liver"),),
                      label=LIVER, resolution=(3.0, 3.0, 3.0)))
    if fissures is not None:
        parts.append(Part(partial(fissure_field, frame=liver, fissures=draw_fissures(fissures, liver)),
                          lobes_box(liver, liver_lobes), ((0.0, "fat"),), label=0, within=LIVER,
                          resolution=(1.0, 1.0, 1.0)))
    if gallbladder is not None:
        gb_centre = liver.to_world([GALLBLADDER[1]])[0]
        parts.append(Part(gallbladder, box_around(gb_centre, 60.0), ((0.0, "gut wall"), (2.0, "bile")), label=0,
                          resolution=(1.5, 1.5, 1.5)))
    parts.append(Part(partial(spleen_field, frame=spleen, body=body, diaphragm=diaphragm, spine=spine, hollow=hollow),
                      spleen.box(np.negative(SPLEEN_RADII), SPLEEN_RADII, 5.0), ((0.0, "spleen"),), label=SPLEEN,
                      resolution=(3.0, 3.0, 3.0)))
    for frame in kidneys:
        parts += kidney_parts(rng, frame, sinus_labelled, pelvis_labelled)
    parts.append(Part(partial(lobulated_tube_field, tube=pancreas, lobes=lobes, amplitude=amplitude),
                      tube_box([pancreas], 2 * amplitude), ((0.0, "pancreas"),), label=PANCREAS,
                      resolution=(0.0, 0.0, 0.0)))
    if fat_plane_mm > 0.0:
        body_and_tail = pancreas_body_and_tail(pancreas)
        parts.append(Part(partial(lobulated_tube_field, tube=body_and_tail, lobes=lobes, amplitude=amplitude,
                                  grow=fat_plane_mm), tube_box([body_and_tail], 2 * amplitude + fat_plane_mm),
                          ((0.0, "fat"),), into=GUT_SPACE, resolution=(0.0, 0.0, 0.0)))
    parts += vessel_parts(rng, spine, liver, spleen, kidneys, pancreas, hollow)
    parts += lesion_parts(rng, liver, kidneys)
    parts += gut_parts(rng, body)
    parts += upper_chest_parts(rng, body, spine)
    if arms is not None:
        parts += arm_parts(arms, body)
    return parts
