"""Synthetic abdominal CT with known ground truth: the project's one phantom generator.

A phantom is a float32 CT volume in Hounsfield units and a uint8 label map on the same grid (FLARE
labels `LABELS`: 1 liver, 2 kidneys (both), 3 spleen, 4 pancreas; lesions keep their organ's label),
made from a seed. Arrays are indexed (x, y, z) in nibabel's closest canonical orientation (RAS+, as
in inference/axes.py): x from the patient's left to right, y posterior to anterior, z inferior to
superior; spacing is in mm along (x, y, z). The same seed gives the same phantom, bit for bit.

Anatomy model. The anatomy is built in millimetres in the patient frame, whose axes are those of
the arrays (it is the NIfTI world frame of the canonical image): origin on the midline at the
vertebral bodies' centre line, z = 0 near the L1/L2 disc. So one seed gives one patient, whatever
the grid it is sampled on. Every structure is a signed distance-like field (mm, negative inside),
evaluated only inside its bounding box on a grid no finer than it needs and linearly upsampled to
the scan's grid, then painted as a tissue class in anatomical order (later structures cover earlier
ones; gut fills only the fat left over):

* trunk: the outer surface of the muscle wall is an ellipse perturbed by low-order Fourier terms
  that vary smoothly along z; skin and subcutaneous fat outside it, the muscle wall inside it
  (thicker rectus bellies in front, three layers at the sides), the erector spinae behind the
  spine, psoas (growing towards the pelvis) and quadratus lumborum, fat behind the peritoneum, the
  table under the flattened back;
* skeleton: vertebral bodies (cortical shell, cancellous core) stacked along z with discs between,
  arches, canal, spinous and transverse processes, a lumbar lordosis and a fused sacrum tilted back,
  widest at its alae, ending at the coccyx; ribs 7-12 as flat tubes in the body wall, falling
  anteriorly, with costal cartilages; iliac wings from the sacrum's side to the anterior spines;
* chest: lung bases above two diaphragm domes (the right higher), the heart on the central tendon;
* organs, each with its own random pose, size, smooth displacement field and lobulation: liver
  (right lobe, inferior tip, tapered left lobe across the midline, caudate; shaped by the body wall,
  the diaphragm, the right kidney and the gallbladder fossa), spleen (a crescent against the ribs),
  kidneys (beans with cortex, medullary pyramids, renal sinus fat and pelvis, hilum anteromedial,
  the left usually higher; the sinus fat not labelled), pancreas (a thin lobulated tube of
  elliptic cross-section from the head in the duodenal C-loop, anterior to the IVC, over the aorta
  to the tail at the splenic hilum);
* vessels as tubes: aorta, IVC, iliac, renal, mesenteric, portal and splenic vessels (the splenic
  vein along the back of the pancreas), hepatic veins and portal branches inside the liver;
* gut: oesophagus, stomach with an air-fluid level, duodenal C-loop, colon with haustra and mottled
  faeces, and small bowel as random tubes (where two smooth random fields are both near zero);
* lesions (cysts, hypodense tumours, 5-40 mm) in the liver and kidneys of some cases.

Each tissue gets a CT value for the case's contrast phase (non-contrast, arterial, portal-venous)
drawn around its prior (`HU_PRIORS`), texture, blur and spatially correlated noise; in the
domain-randomised mode (as SynthSeg does for MRI) every tissue gets a random value instead, with a
bias field, a random resolution, noise and gamma. The labels do not depend on the mode. Scan
geometries (`draw_geometry`) vary spacing, field of view and z range; a set may mix in scans
reaching up into the chest, short slabs through the upper abdomen, thin slabs just below the liver
dome, scans starting at the liver's widest part, scans of the lower abdomen starting below the
spleen, fatty, atrophic (thin) or short-headed pancreases, pancreases in a plane of fat that the
gut keeps out of, colons of homogeneous fluid instead of faeces, fatty livers, the pelvis and hips
(gluteal muscles, bladder, rectum, femoral heads, pubic bones), kidneys labelled with their sinus
fat as in earlier sets, more scans without contrast, organs enhancing apart from the vessels,
fat-filled fissures in the liver, arms beside the body with the dark band their rays leave across it,
long left lobes, stomachs full of smooth food as dense as the organs, large spleens, livers with a
darker region, and metal implants with their streaks (`Mix`); files are written in a storage
orientation drawn per case (RAS, LPS, LAS or permuted axes).

Command line:

    python -m training.phantom --out DIR --cases N --seed S [--max-side N] [--randomise P] [--chest P] [--slab P]
        [--thin-slab P] [--fatty P] [--atrophic P] [--metal P] [--fat-plane P] [--fluid-colon P]
        [--pelvis P] [--fatty-liver P] [--liver-cut P] [--kidney-sinus P] [--short-head P]
        [--non-contrast P] [--organ-enhancement P] [--liver-fissures P] [--arms P] [--long-left-lobe P]
        [--full-stomach P] [--large-spleen P] [--liver-region P] [--lower-abdomen P] [--prefix phantom] [--start I]
    python -m training.phantom --preview PNG [--cases 3] [--seed S] [--start I] [--max-side N] [--chest P] ...

writes DIR/images/<prefix>_<NNNN>_0000.nii.gz (int16 HU), DIR/labels/<prefix>_<NNNN>.nii.gz (uint8)
and DIR/cases.csv for cases NNNN = I .. I+N-1; case NNNN depends only on (S, NNNN) (`case_seed`).
--preview renders axial and coronal slices of a few cases instead. Exit code 0, or 2 on usage errors.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields, replace
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy import ndimage
from scipy.interpolate import CubicSpline

from flare_common import cli
from flare_common.errors import InputError
from flare_common.nifti import nifti_files
from training.data import PATHOLOGICAL_LIST, case_name

# ------------------------------------------------------------------------------------ labels, tissues, CT values

LABELS = {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
LIVER, KIDNEY, SPLEEN, PANCREAS = 1, 2, 3, 4

PHASES = ("non-contrast", "arterial", "portal-venous")
PHASE_PROBABILITIES = (0.2, 0.2, 0.6)

# Tissue: mean HU in each phase (non-contrast, arterial, portal-venous), the case-to-case sd of that
# mean, and the amplitudes (HU) of its fine (FINE_TEXTURE_MM) and coarse (COARSE_TEXTURE_MM) texture.
HU_PRIORS: dict[str, tuple[tuple[float, float, float], float, float, float]] = {
    "air": ((-1000.0, -1000.0, -1000.0), 3.0, 0.0, 0.0),
    "gas": ((-985.0, -985.0, -985.0), 10.0, 8.0, 0.0),
    "lung": ((-850.0, -850.0, -850.0), 30.0, 30.0, 25.0),
    "fat": ((-100.0, -100.0, -100.0), 10.0, 6.0, 4.0),
    "retroperitoneal fat": ((-95.0, -95.0, -95.0), 10.0, 8.0, 5.0),
    "visceral fat": ((-95.0, -95.0, -95.0), 12.0, 10.0, 6.0),
    "skin": ((25.0, 35.0, 45.0), 8.0, 6.0, 0.0),
    "muscle": ((45.0, 50.0, 55.0), 5.0, 6.0, 3.0),
    "myocardium": ((45.0, 120.0, 100.0), 8.0, 6.0, 0.0),
    "cortical bone": ((850.0, 850.0, 850.0), 150.0, 80.0, 30.0),
    "cancellous bone": ((230.0, 235.0, 240.0), 40.0, 45.0, 15.0),
    "disc": ((80.0, 85.0, 90.0), 10.0, 8.0, 0.0),
    "cartilage": ((120.0, 125.0, 130.0), 20.0, 15.0, 0.0),
    "csf": ((12.0, 12.0, 12.0), 4.0, 3.0, 0.0),
    "table": ((450.0, 450.0, 450.0), 150.0, 10.0, 0.0),
    "artery": ((40.0, 320.0, 180.0), 12.0, 5.0, 0.0),
    "portal vein": ((40.0, 110.0, 175.0), 12.0, 5.0, 0.0),
    "vein": ((40.0, 75.0, 150.0), 12.0, 6.0, 0.0),
    "blood": ((40.0, 260.0, 160.0), 12.0, 6.0, 0.0),
    "liver": ((60.0, 75.0, 115.0), 4.0, 5.0, 4.0),
    "spleen": ((47.0, 130.0, 120.0), 4.0, 6.0, 4.0),
    "kidney cortex": ((33.0, 210.0, 175.0), 8.0, 8.0, 0.0),
    "kidney medulla": ((30.0, 90.0, 140.0), 8.0, 8.0, 0.0),
    "urine": ((10.0, 10.0, 12.0), 5.0, 3.0, 0.0),
    "pancreas": ((45.0, 115.0, 100.0), 4.0, 12.0, 4.0),
    "bile": ((10.0, 10.0, 12.0), 6.0, 3.0, 0.0),
    "gut wall": ((40.0, 90.0, 100.0), 8.0, 8.0, 0.0),
    "bowel fluid": ((15.0, 15.0, 15.0), 8.0, 6.0, 3.0),
    "faeces": ((20.0, 20.0, 20.0), 15.0, 70.0, 10.0),
    "gastric content": ((25.0, 25.0, 25.0), 12.0, 25.0, 10.0),
    "cyst": ((8.0, 9.0, 10.0), 5.0, 3.0, 0.0),
    "tumour": ((35.0, 50.0, 65.0), 8.0, 12.0, 0.0),
}
TISSUE = {name: code for code, name in enumerate(HU_PRIORS)}
ARTERIAL_MOTTLE_HU = {"spleen": 35.0}  # extra coarse texture in the arterial phase (the spleen's arciform pattern)
MOTTLED = ("faeces", "gastric content")  # gas bubbles where the fine texture exceeds MOTTLE_THRESHOLD
MOTTLE_THRESHOLD = 1.1
GUT_SPACE = ("visceral fat", "retroperitoneal fat")  # the stomach, duodenum and colon fill only these
LESION_DARKER_HU = 20.0  # a tumour is at least this much darker than the liver
ORAL_CONTRAST = (0.15, (150.0, 350.0))  # probability of positive oral contrast, its HU range
BOLUS = (0.8, 1.2)  # case factor on every tissue's enhancement
# Organs enhancing apart from the vessels (Mix.organ_enhancement): the enhancement of the liver, spleen,
# kidneys and pancreas over their non-contrast value scaled by one factor in ORGAN_ENHANCEMENT for all
# four, times one in ORGAN_ENHANCEMENT_SPREAD for each, instead of the case's BOLUS (which the vessels
# keep). Timing, dose and circulation vary this way: a real contrast-enhanced CT's liver held 89 HU and
# its spleen 80 beside an aorta of 208, where the phantoms' portal-venous liver is 104-126 and spleen
# 105-135, the spleen rarely below the liver.
ORGAN_ENHANCEMENT = (0.3, 1.3)
ORGAN_ENHANCEMENT_SPREAD = (0.8, 1.25)
ENHANCING_ORGANS = {"liver": ("liver",), "spleen": ("spleen",), "kidney": ("kidney cortex", "kidney medulla"),
                    "pancreas": ("pancreas",)}
FINE_TEXTURE_MM, COARSE_TEXTURE_MM = 2.5, 10.0
NOISE_HU = (5.0, 25.0)  # sd of the image noise
NOISE_GRAIN_MM = (0.4, 0.9)  # in-plane correlation of the noise (Gaussian sigma)
BLUR_MM = (0.3, 0.8)  # in-plane Gaussian blur (sigma) of the reconstruction
SLICE_BLUR = (0.35, 0.5)  # z blur sigma as a fraction of the slice spacing
HU_STORED = (-1024, 3071)  # range of the int16 files
# A fatty pancreas (Mix.fatty): this fraction of its parenchyma replaced by visceral fat in lobules
# about FATTY_GRAIN_MM across, the label kept (annotators outline the gland, fat between the lobules
# included). Common with age; a real 3 mm CT's pancreas averaged -8 HU against the 45 HU of lean tissue.
FATTY_PANCREAS = (0.15, 0.6)
FATTY_GRAIN_MM = 3.0
# An atrophic pancreas (Mix.atrophic): the gland's thickness and lobulation scaled by this factor (its
# volume by about its square: 15-45 ml against the 50-110 ml of a full gland). Common with age, often
# with fat; a real 3 mm CT's pancreas held 17 ml, 9-15 mm thick.
ATROPHIC_PANCREAS = (0.45, 0.75)
# A short pancreatic head (Mix.short_head): the centre line right of the neck (uncinate process and
# head) drawn this fraction of its length, its thickness scaled by (1 + fraction) / 2, so the gland
# ends near the midline instead of filling the duodenal C-loop. Glands vary this way; a real 3 mm
# CT's reference gland reached 21 mm right of the kidneys' centre and 13 mm below it, where full
# phantom heads reach 26-94 mm and 19-57 mm.
SHORT_PANCREAS_HEAD = (0.2, 0.6)
# A fat plane round the pancreas (Mix.fat_plane): fat this thick (mm) around the gland's body and tail,
# which no gut enters (the duodenum still wraps the head). Without it stomach, colon and small bowel
# fill the fat up to the gland's surface; a real 3 mm CT's gland lay in a band of fat between the
# stomach and the left kidney.
PANCREAS_FAT_PLANE_MM = (3.0, 12.0)
# A colon of fluid or soft stool (Mix.fluid_colon): its content one homogeneous value in this range (HU)
# with FLUID_COLON_TEXTURE_HU of texture and no gas bubbles, instead of mottled faeces. A real
# non-contrast CT's ascending colon held 18 HU (sd 21) over 60 mm below the liver's tip, which
# phantom-trained weights took for liver.
FLUID_COLON_HU = (0.0, 45.0)
FLUID_COLON_TEXTURE_HU = 4.0
# A fatty liver (Mix.fatty_liver): steatosis lowers the liver's attenuation by this many HU in every
# phase (lesions kept LESION_DARKER_HU darker still). Common in adults; a real non-contrast CT's liver
# was 47 HU where the phantoms' prior is 60 +- 4.
FATTY_LIVER_DROP_HU = (5.0, 40.0)
# A stomach full of food (Mix.full_stomach): its content this dense (HU), with this fine texture (sd,
# HU) and no gas bubbles, instead of the gastric content's prior (its gas above the fluid level kept).
# A real non-contrast CT's stomach held food of 35-45 HU (sd 30 with the noise), hardly a bubble in
# it, beside a spleen of 41 HU, which weights fine-tuned further took for spleen.
FULL_STOMACH_HU = (30.0, 65.0)
FULL_STOMACH_TEXTURE_HU = 15.0
# A darker region of the liver (Mix.liver_region): uneven enhancement or focal fat, a share of the
# parenchyma (where a smooth random field with control points every LIVER_REGION_STEP_MM is lowest)
# lowered by this many HU, fading over the field's next LIVER_REGION_FADE of its sd; the label kept. A
# real contrast-enhanced CT's liver held such a region at the back of its right lobe (65 HU against
# 94), which phantom-trained weights left out of the liver.
LIVER_REGION_HU = (15.0, 40.0)
LIVER_REGION_SHARE = (0.15, 0.4)
LIVER_REGION_STEP_MM = 40.0
LIVER_REGION_FADE = 0.3

# Metal implants (Mix.metal) and the streaks they cast: surgical clips by the gallbladder's fossa, or
# pedicle screws with rods in 1-3 vertebrae. Metal saturates the stored range; around it, in each
# axial slice, filtered back-projection leaves streaks along the rays through it (bright and dark,
# falling off as 1/r) and a dark band along rays through two pieces of metal (beam hardening).
METAL_KINDS = ("clips", "spinal screws")
METAL_HU = float(3071)
CLIP_COUNT, CLIP_LENGTH_MM, CLIP_RADIUS_MM, CLIP_SPREAD_MM = (2, 7), (3.0, 9.0), (0.5, 1.0), 15.0
SCREW_LEVELS, SCREW_RADIUS_MM, ROD_RADIUS_MM, LEVEL_STEP_MM = (1, 3), (2.5, 3.25), 2.75, 32.0
STREAK_HU = {"clips": (100.0, 300.0), "spinal screws": (250.0, 600.0)}  # streaks' amplitude at STREAK_NEAR_MM
STREAK_NEAR_MM = 10.0
STREAK_WIDTH_DEG = (0.3, 1.5)  # angular correlation (Gaussian sigma) of a slice's streak pattern
BEAM_HARDENING_HU = (0.5, 1.0)  # depth of the dark band between two pieces of metal, as a share of the streaks'
STREAK_LIMIT_HU = 1000.0

# Domain-randomised mode: random tissue values and texture, bias field, resolution, noise and gamma.
RANDOM_HU = (-1000.0, 1500.0)
RANDOM_TEXTURE_HU = (0.0, 80.0)
RANDOM_BIAS = (0.0, 0.35)  # amplitude of the log bias field
RANDOM_BIAS_MM = 80.0
RANDOM_DOWNSAMPLE = (1.0, 3.0)  # factor per axis
RANDOM_NOISE_HU = (0.0, 40.0)
RANDOM_GAMMA_SD = 0.4  # of the log of gamma

# ------------------------------------------------------------------------------------ scan geometry

MATRIX = 512
INPLANE_SPACING_MM = (0.6, 1.0)
SLICE_SPACINGS_MM = (0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
SLICE_SPACING_P = (0.08, 0.12, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15)
MAX_SLICES = 300
DOME_MM = 140.0  # nominal z of the right diaphragm dome
# Scan ranges: name: probability, top of the scan relative to the nominal dome (mm), z coverage (mm).
SCAN_RANGES = {"lung bases down": (0.65, (5.0, 50.0), (250.0, 450.0)),  # lung bases to the pelvis
               "upper abdomen": (0.20, (-5.0, 40.0), (150.0, 250.0)),
               "below the dome": (0.15, (-50.0, -10.0), (180.0, 400.0))}  # starting below the liver dome
# Ranges a set may mix in (Mix.chest, Mix.slab, Mix.thin_slab, Mix.liver_cut, Mix.lower_abdomen), drawn from a
# stream of their own: top (mm) and coverage (mm). New ranges go last (Mix.extra_range keeps sets as they were).
EXTRA_RANGES = {"chest": ((80.0, 250.0), (250.0, 600.0)),  # from the upper chest (heart, lungs) down
                "slab": ((-70.0, 10.0), (50.0, 140.0)),  # a short slab through the upper abdomen
                "thin slab": ((-60.0, 0.0), (20.0, 50.0)),  # a few slices below the dome, often above the kidneys
                "liver cut": ((-110.0, -45.0), (150.0, 400.0)),  # from the liver's widest part down
                # below the spleen, through the liver's lowest part or below it (the liver ends 110-210 mm
                # below the dome, the kidneys 190-230 mm), down into the pelvis: an abdomen-pelvis scan's lower part
                "lower abdomen": ((-210.0, -110.0), (150.0, 350.0))}
FOV_CENTRE_MM = ((0.0, 8.0), (0.0, 25.0))  # x: normal (mean, sd); y: uniform (low, high)
ABDOMEN_CENTRE_MM = (0.0, 15.0, 10.0)  # the middle of the organs' region in the patient frame
ORIENTATIONS = (("R", "A", "S"), ("L", "P", "S"), ("L", "A", "S"), ("S", "L", "P"), ("P", "S", "R"))
ORIENTATION_P = (0.3, 0.35, 0.2, 0.1, 0.05)

# ------------------------------------------------------------------------------------ anatomy (patient frame, mm)

SPINE_TO_BACK_MM = 85.0  # from the vertebral bodies' centre line to the back of the muscle wall
# With the pelvic organs the trunk widens below the iliac crest to the hips: by a fraction of its
# width drawn from HIP_GAIN, reached HIP_RAMP_MM below the crest (the greater trochanters' level).
HIP_GAIN = (0.06, 0.2)
HIP_RAMP_MM = 80.0
SACRUM_LEVELS = (-4.0, -7.0)  # the sacrum's top (the L5/S1 disc) and the coccyx's tip, in vertebral pitches from z0
RETROPERITONEUM = ((-100.0, -50.0), (35.0, 55.0), 400.0)  # the peritoneum's back: y = a(z) - x^2 / b (mm),
# a(z) linear from a[0] at z[0] to a[1] at z[1] (thinner below the kidneys)
LIVER_CENTRE = (55.0, 15.0, 75.0)
LIVER_REACH_MM = 170.0  # half the side of the box the liver's displacement and lobulation fields cover
LIVER_LOBES = (  # liver frame: centre, half-axes (mm), taper (thinning towards -x, per half-axis)
    ((25.0, -5.0, 5.0), (80.0, 90.0, 80.0), 0.0),  # right lobe
    ((50.0, 0.0, -55.0), (38.0, 45.0, 45.0), 0.0),  # inferior tip of the right lobe
    ((-70.0, 35.0, 15.0), (75.0, 32.0, 36.0), 0.6),  # left lobe across the midline
    ((-18.0, -28.0, 0.0), (20.0, 22.0, 32.0), 0.0),  # caudate lobe
)
# A long left lobe (Mix.long_left_lobe): one more lobe joined to the left lobe, reaching down in front
# of the stomach under the anterior abdominal wall (liver frame: centre and half-axes ranges, mm). Left
# lobes vary this way; a real 3 mm CT's left lobe reached 80-90 mm below the phantoms' liver centre,
# down to the renal hilum, where the phantoms' left lobe ends about 20 mm below it.
LEFT_LOBE_TONGUE = (((-75.0, -35.0), (50.0, 60.0), (-70.0, -40.0)), ((25.0, 45.0), (10.0, 16.0), (25.0, 45.0)))
GALLBLADDER = (0.65, (-10.0, 40.0, -45.0), (16.0, 18.0, 38.0))  # probability, centre (liver frame), half-axes
# Liver fissures (Mix.liver_fissures): fat-filled clefts that the liver label leaves out, in the liver's
# frame (mm). The umbilical fissure (ligamentum teres) cuts in from the front and the inferior edge
# towards the porta, between the left lobe's lateral and medial parts: a sheet at x (mm), turned by
# +-ANGLE_DEG about the vertical, reaching back to y and up to z, WIDTH_MM thick. The fissure of the
# ligamentum venosum separates the caudate lobe from the left lobe (a coronal sheet over the x and z
# ranges, at y), and the porta hepatis holds fat round the portal vein's entry (an ellipsoid of
# these half-axes); each present with its probability, all waved by a smooth field of WAVE_MM.
# A real 3 mm CT's liver showed such clefts, 1-2 voxels of fat, and phantom-trained weights ended
# the liver at them, leaving out its left lobe.
UMBILICAL_FISSURE = {"x": (-65.0, -35.0), "angle_deg": 35.0, "y": (0.0, 25.0), "z": (-15.0, 45.0)}
VENOSUM_FISSURE = (0.7, {"x": (-70.0, -5.0), "y": (-12.0, 0.0), "z": (-30.0, 40.0)})
PORTA_FAT = (0.7, (-10.0, 12.0, -30.0), ((10.0, 18.0), (6.0, 12.0), (8.0, 14.0)))
FISSURE_WIDTH_MM = (1.5, 6.0)
FISSURE_WAVE_MM = 4.0
PORTAL_BRANCHES = (  # liver frame: polylines from the porta hepatis, radii at their ends (mm)
    (((-10.0, 12.0, -30.0), (25.0, 0.0, -20.0), (60.0, -12.0, -10.0), (90.0, -20.0, -5.0)), (6.0, 3.0)),
    (((25.0, 0.0, -20.0), (45.0, 30.0, 0.0), (70.0, 45.0, 5.0)), (4.5, 2.5)),
    (((25.0, 0.0, -20.0), (50.0, -40.0, -15.0), (75.0, -60.0, -20.0)), (4.5, 2.5)),
    (((-10.0, 12.0, -30.0), (-30.0, 20.0, -15.0), (-60.0, 38.0, 0.0), (-100.0, 40.0, 5.0)), (5.0, 2.5)),
)
HEPATIC_VEINS = (  # liver frame: from the IVC near the dome into the liver
    (((-30.0, 5.0, 50.0), (40.0, -30.0, 30.0), (85.0, -45.0, 10.0)), (6.0, 3.0)),
    (((-30.0, 5.0, 50.0), (10.0, 30.0, 20.0), (35.0, 60.0, -10.0)), (5.5, 3.0)),
    (((-30.0, 5.0, 50.0), (-55.0, 40.0, 30.0), (-95.0, 45.0, 20.0)), (5.0, 2.5)),
)
SPLEEN_CENTRE = (-88.0, -30.0, 55.0)
SPLEEN_RADII = (26.0, 52.0, 62.0)  # thickness, width, length
SPLENOMEGALY = (0.08, 1.35)  # probability and size factor of a large spleen in any case
# A large, bulky spleen (Mix.large_spleen): grown by a size factor, its hilum's hollow made shallower
# (moved out by this share of its thickness) so that its back reaches in towards the spine, and the left
# kidney pushed down below it (mm). A real contrast-enhanced slab's spleen held 249 ml within 40 mm,
# filling the back of the left upper abdomen above the kidney, where the phantoms' left kidney's upper
# pole lies; weights trained on them labelled that part of the spleen kidney.
LARGE_SPLEEN_SIZE = (1.3, 1.6)
LARGE_SPLEEN_HOLLOW = (0.2, 0.7)
LARGE_SPLEEN_KIDNEY_DROP_MM = (10.0, 30.0)
KIDNEY_CENTRE = {+1: (72.0, -5.0, -20.0), -1: (-72.0, -5.0, -5.0)}  # by side: +1 right, -1 left
KIDNEY_RADII = (30.0, 22.0, 55.0)  # towards the hilum, thickness, length
KIDNEY_CORTEX_MM = 6.0
PANCREAS_POINTS = ((38.0, 42.0, -38.0), (40.0, 50.0, -18.0), (20.0, 62.0, -4.0), (-10.0, 66.0, 4.0),
                   (-45.0, 55.0, 12.0), (-72.0, 35.0, 22.0), (-92.0, 10.0, 30.0))  # uncinate to tail
PANCREAS_RADII = (9.0, 13.0, 9.0, 8.0, 8.0, 8.5, 7.5)  # in-plane half-thickness (mm)
PANCREAS_HEIGHT = (1.3, 1.8)  # cross-section height / thickness
PANCREAS_NECK_X = 12.0  # x (mm) of the neck, in front of the portal confluence: the head lies right of it
PANCREAS_NECK_POINT = 2  # index of the neck in PANCREAS_POINTS; those before it are the uncinate process and head
GUT_TUBE = (  # oesophagus, stomach and duodenum: point (mm), radius (mm)
    ((-8.0, 12.0, 230.0), 7.0), ((-15.0, 18.0, 160.0), 7.0), ((-30.0, 22.0, 115.0), 9.0),
    ((-48.0, 5.0, 98.0), 32.0), ((-64.0, 22.0, 75.0), 36.0), ((-70.0, 45.0, 48.0), 33.0),
    ((-55.0, 68.0, 27.0), 27.0), ((-25.0, 82.0, 15.0), 21.0), ((5.0, 78.0, 12.0), 14.0),
    ((25.0, 68.0, 15.0), 9.0), ((45.0, 55.0, 15.0), 14.0), ((64.0, 42.0, 0.0), 13.0),
    ((66.0, 44.0, -32.0), 12.0), ((45.0, 52.0, -52.0), 11.0), ((10.0, 54.0, -56.0), 11.0),
    ((-22.0, 54.0, -42.0), 11.0), ((-32.0, 60.0, -22.0), 12.0),
)
STOMACH_POINTS = slice(3, 10)  # the points of GUT_TUBE that distension scales
COLON = (  # cecum to rectum: point (mm), radius (mm)
    ((75.0, 35.0, -170.0), 28.0), ((95.0, 15.0, -130.0), 26.0), ((105.0, 5.0, -70.0), 25.0),
    ((100.0, 22.0, -25.0), 25.0), ((70.0, 60.0, -32.0), 24.0), ((35.0, 85.0, -50.0), 24.0),
    ((0.0, 92.0, -65.0), 23.0), ((-40.0, 85.0, -45.0), 23.0), ((-80.0, 55.0, 5.0), 23.0),
    ((-98.0, 20.0, 35.0), 22.0), ((-108.0, -5.0, 0.0), 21.0), ((-110.0, -5.0, -60.0), 20.0),
    ((-100.0, 5.0, -130.0), 20.0), ((-75.0, 25.0, -185.0), 19.0), ((-35.0, 35.0, -215.0), 19.0),
    ((0.0, 10.0, -235.0), 19.0), ((5.0, -25.0, -270.0), 20.0),
)
GUT_WALL_MM = 2.5
# Ribs 12..7: end of the bone and of the cartilage (elliptic angle, rad; None: floating), fall of
# the bone from its head to its end and rise of the cartilage (mm).
RIBS = ((-0.75, None, 25.0, 0.0), (-0.3, None, 45.0, 0.0), (0.2, 0.75, 70.0, 15.0),
        (0.5, 0.95, 85.0, 20.0), (0.7, 1.15, 95.0, 25.0), (0.9, 1.35, 100.0, 30.0))
RIB_START = -np.pi / 2 + 0.45  # elliptic angle where a rib reaches the body wall
# The upper chest, drawn only above CHEST_FROM_MM (above every scan of SCAN_RANGES, whose cases it
# leaves as they were): ribs 5..1 (columns as RIBS, from vertebra level 8 up), the trachea down to
# the carina, the ascending aorta and arch, the pulmonary trunk and arteries, the SVC (mm, radius mm)
# and vessels in the lungs.
CHEST_FROM_MM = DOME_MM + 55.0
UPPER_RIBS = ((1.0, 1.4, 80.0, 25.0), (1.05, 1.42, 70.0, 20.0), (1.1, 1.44, 60.0, 15.0),
              (1.15, 1.45, 45.0, 10.0), (1.2, 1.45, 30.0, 5.0))
UPPER_RIB_LEVEL = 8
TRACHEA = (((0.0, 30.0, 480.0), (0.0, 24.0, 380.0), (-2.0, 18.0, 300.0)), 9.0)  # to the carina
BRONCHI = (((-2.0, 18.0, 300.0), (-40.0, 12.0, 275.0), (-65.0, 8.0, 255.0)),
           ((-2.0, 18.0, 300.0), (35.0, 15.0, 285.0), (60.0, 10.0, 270.0)))
GREAT_VESSELS = (  # points relative to the carina (0, 0, 0 = TRACHEA's last point), radius
    (((5.0, 45.0, -110.0), (12.0, 42.0, -40.0), (5.0, 30.0, 25.0), (-15.0, 5.0, 35.0), (-25.0, -25.0, 20.0)), 14.0),
    (((-15.0, 50.0, -100.0), (-18.0, 35.0, -35.0), (-55.0, 10.0, -25.0), (-75.0, 5.0, -35.0)), 12.0),
    (((-15.0, 35.0, -35.0), (20.0, 15.0, -30.0), (60.0, 5.0, -40.0)), 10.0),
    (((28.0, 30.0, 150.0), (27.0, 35.0, 20.0), (22.0, 40.0, -80.0)), 10.0),
)
LUNG_VESSEL_STEP_MM = (7.0, 11.0)  # feature size of the fields whose zero curves the vessels follow
LUNG_VESSEL_RADIUS_MM = (1.2, 2.5)
LESIONS = (0.3, 1.0, 0.35, 0.5)  # P(case has lesions), mean extra liver lesions, P(kidney lesion), P(cyst)
LESION_RADIUS_MM = (2.5, 20.0)
# Arms beside the body (Mix.arms), as in scans of patients who do not raise them (trauma, PET/CT, the
# frail): each arm a column of skin, fat and muscle round its bone (the humerus above the elbow, the
# radius and ulna below), ARM_GAP_MM from the trunk, its centre at ARM_Y_MM (patient frame), painted
# only into air. In every axial slice the rays through both arms leave a band of darker, noisier
# tissue across the body between them (photon starvation and beam hardening; ARM_SHADOW_*). A real
# contrast-enhanced CT's liver and spleen were 25-30 HU darker and noisier in the band between its
# arms (63-79 HU against 88-102 in front of it), and phantom-trained weights left that part of the
# liver out and took the spleen there for a kidney.
ARM_Y_MM = (-40.0, 15.0)
ARM_GAP_MM = (-5.0, 25.0)
ARM_RADII_MM = ((30.0, 45.0), (35.0, 50.0))  # the upper arm's half-axes across (x) and front to back (y)
FOREARM_SCALE = (0.65, 0.85)  # the forearm's half-axes as a share of the upper arm's
ELBOW_Z_MM = (-90.0, 40.0)
ARM_FAT_MM = (3.0, 20.0)
HUMERUS_RADIUS_MM = (9.0, 13.0)
FOREARM_BONE_RADIUS_MM = (5.0, 7.5)  # the radius and the ulna, side by side
BONE_CORTEX_MM = (2.5, 4.0)  # cortical shell round fatty marrow
BONE_OFFSET_MM = 8.0  # the bone's centre within this of the arm's
ARM_SHADOW_HU = (10.0, 45.0)  # depth of the dark band on the line through both arms' bones
ARM_SHADOW_WIDTH_MM = (10.0, 30.0)  # its sd across that line
ARM_SHADOW_NOISE_HU = (5.0, 25.0)  # sd of the extra noise on that line
ARM_SHADOW_GRAIN_MM = (2.0, 8.0)  # the extra noise's correlation along the band (Gaussian sigma; 0.5 mm across)
BIG_MM = 1000.0  # the field value far from a structure


# ------------------------------------------------------------------------------------ grids and fields

Axes = tuple[np.ndarray, np.ndarray, np.ndarray]  # world coordinates (mm) of a grid along x, y, z
Field = Callable[[Axes], np.ndarray]  # signed distance-like field (mm, negative inside) on a grid


@dataclass(frozen=True)
class Geometry:
    """A scan's voxel grid in the canonical orientation: shape (x, y, z) voxels, spacing (x, y, z) mm,
    origin the patient-frame position (mm) of voxel (0, 0, 0); the z range and field of view follow."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axes(self) -> Axes:
        """Patient-frame coordinates (mm, float32) of the voxel centres along x, y and z."""
        return tuple((o + s * np.arange(n)).astype(np.float32)
                     for n, s, o in zip(self.shape, self.spacing, self.origin))

    @property
    def affine(self) -> np.ndarray:
        """The canonical (RAS+) voxel-to-world affine."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine


def _open(axes: Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The axes as broadcastable arrays of shapes (nx, 1, 1), (1, ny, 1), (1, 1, nz)."""
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


@dataclass(frozen=True)
class SmoothField:
    """A smooth random field of unit variance: random coefficients (..., cx, cy, cz) on control points
    lo + step * index (mm), interpolated by a Gaussian kernel of width step (separable)."""

    lo: tuple[float, float, float]
    step: float
    coef: np.ndarray


def draw_field(rng: np.random.Generator, lo: Sequence[float], hi: Sequence[float], step: float,
               components: int = 0) -> SmoothField:
    """A smooth random field over the box lo..hi (mm) with control points every step mm."""
    n = tuple(int(np.ceil((h - low) / step)) + 1 for low, h in zip(lo, hi))
    shape = (components, *n) if components else n
    return SmoothField(tuple(float(v) for v in lo), float(step), rng.standard_normal(shape, dtype=np.float32))


def _basis(coords: np.ndarray, lo: float, step: float, n: int) -> np.ndarray:
    """Kernel weights (len(coords), n) of the control points, rows of unit norm (unit variance)."""
    c = (np.clip(coords.astype(np.float64), lo, lo + (n - 1) * step) - lo) / step
    w = np.exp(-0.5 * (c[:, None] - np.arange(n)[None, :]) ** 2)
    return (w / np.sqrt((w ** 2).sum(axis=1, keepdims=True))).astype(np.float32)


def field_on(field: SmoothField, axes: Axes) -> np.ndarray:
    """The field on a grid: shape (..., nx, ny, nz), float32."""
    wx, wy, wz = (_basis(a, lo, field.step, n) for a, lo, n in zip(axes, field.lo, field.coef.shape[-3:]))
    if field.coef.ndim == 4:
        return np.stack([field_on(SmoothField(field.lo, field.step, c), axes) for c in field.coef])
    out = np.tensordot(wx, field.coef, axes=([1], [0]))  # (nx, cy, cz)
    out = np.tensordot(out, wy, axes=([1], [1]))  # (nx, cz, ny)
    return np.tensordot(out, wz, axes=([1], [1]))  # (nx, ny, nz)


def _ellipsoid(q: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float],
               taper: float = 0.0) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid in local coordinates q; taper thins its
    second and third half-axes linearly towards -q[0] (0: none, 1: to nothing at -radii[0])."""
    d = [qi - ci for qi, ci in zip(q, centre)]
    if taper:
        thin = np.clip(1.0 + taper * d[0] / radii[0], 0.25, 1.5)
        d = [d[0], d[1] / thin, d[2] / thin]
    k0 = np.sqrt(sum((di / r) ** 2 for di, r in zip(d, radii)))
    k1 = np.sqrt(sum((di / r ** 2) ** 2 for di, r in zip(d, radii)))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _ellipse(dx: np.ndarray, dy: np.ndarray, rx: np.ndarray | float, ry: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipse centred at the origin."""
    k0 = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    k1 = np.sqrt((dx / rx ** 2) ** 2 + (dy / ry ** 2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two fields, blending over k mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth intersection of two fields, blending over k mm."""
    return -_smin(-a, -b, k)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    """Rotation matrix of angles (rad) about x, then y, then z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _basis_from(first: Sequence[float], third: Sequence[float]) -> np.ndarray:
    """Rotation (columns: local axes in the world) whose third axis is `third` and whose first is
    `first` made orthogonal to it."""
    c = np.asarray(third, float) / np.linalg.norm(third)
    a = np.asarray(first, float) - np.dot(first, c) * c
    a /= np.linalg.norm(a)
    return np.stack([a, np.cross(c, a), c], axis=1)


# ------------------------------------------------------------------------------------ parts and painting

@dataclass(frozen=True)
class Part:
    """One structure to paint: its field, its world bounding box (lo, hi mm), the grid resolution
    (mm per axis) it needs, and what it paints. Voxels with field < -depth get each layer's tissue
    (in order); `label` is set where field < 0 (None: labels untouched); `into` limits painting to
    voxels of those tissues and `within` to voxels of that label; `lesion` counts it as a lesion."""

    field: Field
    box: tuple[tuple[float, float, float], tuple[float, float, float]]
    layers: tuple[tuple[float, str], ...]
    label: int | None = None
    resolution: tuple[float, float, float] = (2.0, 2.0, 2.0)
    into: tuple[str, ...] = ()
    within: int | None = None
    lesion: bool = False


def _box(centre: Sequence[float], reach: Sequence[float] | float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The box centre +- reach (mm)."""
    c, r = np.asarray(centre, float), np.broadcast_to(np.asarray(reach, float), (3,))
    return tuple(c - r), tuple(c + r)


def _block(axes: Axes, box: tuple) -> tuple[slice, slice, slice] | None:
    """The voxel index ranges of the grid inside the box; None if it misses the grid."""
    block = []
    for a, lo, hi in zip(axes, *box):
        i, j = int(np.searchsorted(a, lo)), int(np.searchsorted(a, hi, side="right"))
        if j <= i:
            return None
        block.append(slice(i, j))
    return tuple(block)


def _grid_axis(target: np.ndarray, spacing: float, resolution: float) -> np.ndarray:
    """The axis to evaluate a field on: the target axis, or a coarser one spanning it (resolution mm)."""
    if spacing >= 0.99 * resolution or len(target) < 3:
        return target
    n = int(np.ceil((target[-1] - target[0]) / resolution)) + 1
    return np.linspace(target[0], target[-1], n, dtype=np.float32)


def _resample(f: np.ndarray, src: np.ndarray, dst: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of f along one axis from coordinates src (uniform, spanning dst) to dst."""
    pos = (dst.astype(np.float64) - src[0]) * ((len(src) - 1) / (float(src[-1]) - float(src[0])))
    i = np.minimum(pos.astype(np.intp), len(src) - 2)
    w = (pos - i).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(3)])
    lo = np.take(f, i, axis=axis)
    hi = np.take(f, i + 1, axis=axis)
    hi -= lo
    hi *= w
    hi += lo
    return hi


def _evaluate(part: Part, target: Axes, spacing: Sequence[float]) -> np.ndarray:
    """The part's field on the target grid, computed on its own (coarser) grid and upsampled."""
    grid = tuple(_grid_axis(t, s, r) for t, s, r in zip(target, spacing, part.resolution))
    f = np.broadcast_to(part.field(grid), tuple(len(g) for g in grid))
    growth = [len(t) / len(g) for t, g in zip(target, grid)]
    for axis in sorted(range(3), key=growth.__getitem__):
        if grid[axis] is not target[axis]:
            f = _resample(f, grid[axis], target[axis], axis)
    return f


def _tissue_mask(names: Sequence[str]) -> np.ndarray:
    """A lookup table (256,) that is True for the codes of these tissues."""
    lut = np.zeros(256, bool)
    lut[[TISSUE[n] for n in names]] = True
    return lut


def _paint(tissue: np.ndarray, labels: np.ndarray, f: np.ndarray, part: Part) -> bool:
    """Paint one part into tissue and label blocks (in place); whether it painted anything."""
    inside = f < 0
    if part.into:
        inside &= _tissue_mask(part.into)[tissue]
    if part.within is not None:
        inside &= labels == part.within
    for depth, name in part.layers:
        tissue[inside & (f < -depth) if depth else inside] = TISSUE[name]
    if part.label is not None:
        labels[inside] = part.label
    return bool(part.lesion and inside.any())


def render(parts: Sequence[Part], geometry: Geometry) -> tuple[np.ndarray, np.ndarray, int]:
    """Tissue codes and labels (uint8, x y z) of the parts painted in order on the geometry's grid,
    and the number of lesions that show in it."""
    axes = geometry.axes()
    tissue = np.full(geometry.shape, TISSUE["air"], np.uint8)
    labels = np.zeros(geometry.shape, np.uint8)
    lesions = 0
    for part in parts:
        block = _block(axes, part.box)
        if block is not None:
            f = _evaluate(part, tuple(a[s] for a, s in zip(axes, block)), geometry.spacing)
            lesions += _paint(tissue[block], labels[block], f, part)
    return tissue, labels, lesions


# ------------------------------------------------------------------------------------ tubes

@dataclass(frozen=True)
class Tube:
    """A tube along a polyline: points (n, 3) mm, radius (n,) mm at each, and a stretch of its cross
    section along the world axes (the half-axis along axis k is radius * stretch[k])."""

    points: np.ndarray
    radii: np.ndarray
    stretch: tuple[float, float, float] = (1.0, 1.0, 1.0)


def spline_tube(points: Sequence[Sequence[float]], radii: Sequence[float], step: float = 4.0,
                stretch: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Tube:
    """A tube along the cubic spline through the points (mm), sampled about every step mm."""
    p = np.asarray(points, float)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    t = np.linspace(0.0, s[-1], max(int(s[-1] / step), 1) + 1)
    curve = CubicSpline(s, p, axis=0)(t) if len(p) > 2 else p[0] + (p[-1] - p[0]) * (t / s[-1])[:, None]
    return Tube(curve, np.interp(t, s, radii), stretch)


def _capsule(axes: Axes, a: np.ndarray, b: np.ndarray, ra: float, rb: float, stretch: np.ndarray) -> np.ndarray:
    """Signed distance (stretched mm) to the segment a-b with radius ra at a and rb at b."""
    x, y, z = ((g - c) / s for g, c, s in zip(_open(axes), a, stretch))
    e = (b - a) / stretch
    t = np.clip((x * e[0] + y * e[1] + z * e[2]) / max(float(e @ e), 1e-9), 0.0, 1.0)
    return np.sqrt((x - t * e[0]) ** 2 + (y - t * e[1]) ** 2 + (z - t * e[2]) ** 2) - (ra + t * (rb - ra))


def _tube_field(axes: Axes, tubes: Sequence[Tube], pad: float = 0.0) -> np.ndarray:
    """Distance to the nearest of the tubes, evaluated segment by segment within each one's box;
    BIG_MM beyond pad mm (plus two grid steps) outside them."""
    out = np.full(tuple(len(a) for a in axes), BIG_MM, np.float32)
    step = max(float(a[1] - a[0]) if len(a) > 1 else 0.0 for a in axes)
    for tube in tubes:
        stretch = np.asarray(tube.stretch)
        for k in range(len(tube.points) - 1):
            a, b = tube.points[k], tube.points[k + 1]
            reach = max(tube.radii[k], tube.radii[k + 1]) * stretch + pad + 2 * step
            block = _block(axes, (np.minimum(a, b) - reach, np.maximum(a, b) + reach))
            if block is not None:
                sub = tuple(x[s] for x, s in zip(axes, block))
                view = out[block]
                np.minimum(view, _capsule(sub, a, b, tube.radii[k], tube.radii[k + 1], stretch), out=view)
    return out


def _tube_box(tubes: Sequence[Tube], pad: float = 0.0) -> tuple:
    """The bounding box (mm) of tubes, padded."""
    lo = np.min([t.points.min(0) - t.radii.max() * np.asarray(t.stretch) for t in tubes], axis=0) - pad - 3
    hi = np.max([t.points.max(0) + t.radii.max() * np.asarray(t.stretch) for t in tubes], axis=0) + pad + 3
    return tuple(lo), tuple(hi)


def tube_part(tubes: Sequence[Tube], layers: tuple[tuple[float, str], ...], **kwargs) -> Part:
    """A part made of tubes, evaluated on the scan's own grid."""
    return Part(partial(_tube_field, tubes=tuple(tubes)), _tube_box(tubes), layers,
                resolution=(0.0, 0.0, 0.0), **kwargs)


def _lobulated_tube_field(axes: Axes, tube: Tube, lobes: SmoothField, amplitude: float, grow: float = 0.0) -> np.ndarray:
    """A tube whose surface is moved by amplitude mm times a smooth random field, then out by grow mm."""
    return _tube_field(axes, (tube,), pad=2 * amplitude + grow) + amplitude * field_on(lobes, axes) - grow


# ------------------------------------------------------------------------------------ trunk

@dataclass(frozen=True)
class Body:
    """The trunk. The outer surface of the muscle wall ('core') is an ellipse of half-axes a, b (mm)
    centred at (0, yc), its radius scaled by 1 + sum_m cos[m](z) cos(m t) + sin[m](z) sin(m t) (t: the
    elliptic angle; coefficients linear in z between knots). Outside it lie fat * (1 + fat_tilt *
    sin t) mm of fat and skin mm of skin, the back flattened at y = back; inside it muscle mm of
    muscle, plus rectus mm over the rectus bellies. Below z = hip_z the width grows towards the
    hips, by hip_gain from HIP_RAMP_MM below it down (0: no hips; only with the pelvic organs)."""

    a: float
    b: float
    yc: float
    knots: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    fat: float
    fat_tilt: float
    skin: float
    muscle: float
    rectus: float
    back: float
    hip_z: float = 0.0
    hip_gain: float = 0.0


def _shape_scale(body: Body, t: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The Fourier scale of the core radius at elliptic angle t (rad) and height z (mm), broadcast."""
    scale = 1.0
    for m in range(body.cos.shape[1]):
        cm = np.interp(z, body.knots, body.cos[:, m]).astype(np.float32)
        sm = np.interp(z, body.knots, body.sin[:, m]).astype(np.float32)
        scale = scale + cm * np.cos(m * t) + sm * np.sin(m * t)
    if body.hip_gain:
        ramp = np.clip((body.hip_z - z) / HIP_RAMP_MM, 0.0, 1.0).astype(np.float32)
        scale = scale * (1.0 + body.hip_gain * ramp * ramp * (3.0 - 2.0 * ramp) * np.cos(t) ** 2)
    return scale


def _core(axes: Axes, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Elliptic angle t (rad, shape (nx, ny, 1)) and the radial signed distance (mm) to the core."""
    x, y, _ = _open(axes)
    t = np.arctan2((y - body.yc) / body.b, x / body.a)
    reach = np.hypot(body.a * np.cos(t), body.b * np.sin(t)) * _shape_scale(body, t, axes[2][None, None, :])
    return t, np.hypot(x, y - body.yc) - reach


def _skin_field(axes: Axes, body: Body) -> np.ndarray:
    """The outer surface of the body (mm), its back flattened against the table."""
    t, d = _core(axes, body)
    fat = np.maximum(body.fat * (1.0 + body.fat_tilt * np.sin(t)), 3.0)
    return _smax(d - fat - body.skin, body.back - _open(axes)[1], 10.0)


def _wall_field(axes: Axes, body: Body) -> np.ndarray:
    """The outer surface of the muscle wall (mm)."""
    return _core(axes, body)[1]


def _cavity_field(axes: Axes, body: Body) -> np.ndarray:
    """The inner surface of the muscle wall (mm): the abdominal and thoracic cavity."""
    t, d = _core(axes, body)
    rectus = body.rectus * np.exp(-(((np.abs(t - np.pi / 2) - 0.25) / 0.12) ** 2))
    return d + body.muscle + rectus


def _wall_planes_field(axes: Axes, body: Body, top: float) -> np.ndarray:
    """Two thin fat planes (mm) splitting the lateral muscle wall below z = top into the external
    oblique, internal oblique and transversus muscles."""
    t, d = _core(axes, body)
    planes = np.minimum(np.abs(d + body.muscle / 3), np.abs(d + 2 * body.muscle / 3)) - 0.8
    lateral = (np.abs(np.sin(t)) - 0.75) * 40.0
    return np.maximum(np.maximum(planes, lateral), axes[2][None, None, :] - top)


def _retroperitoneum_field(axes: Axes, body: Body) -> np.ndarray:
    """The cavity behind the peritoneum (mm)."""
    x, y, z = _open(axes)
    (z0, z1), (a0, a1), b = RETROPERITONEUM
    back = np.interp(z, (z0, z1), (a0, a1)).astype(np.float32)
    return np.maximum(_cavity_field(axes, body), y - (back - x ** 2 / b))


def _core_point(body: Body, t: np.ndarray, z: np.ndarray, inset: float) -> tuple[np.ndarray, np.ndarray]:
    """Points (x, y mm) inset mm inside the core at elliptic angles t (rad) and heights z (mm)."""
    reach = np.hypot(body.a * np.cos(t), body.b * np.sin(t)) * _shape_scale(body, t, z) - inset
    angle = np.arctan2(body.b * np.sin(t), body.a * np.cos(t))
    return reach * np.cos(angle), body.yc + reach * np.sin(angle)


def _draw_body(rng: np.random.Generator) -> Body:
    """A trunk: width, depth and shape along z, fat (5-40 mm, some thin, some obese), muscle."""
    a, b = rng.uniform(132.0, 155.0), rng.uniform(88.0, 106.0)
    knots = np.arange(-500.0, 501.0, 100.0)
    sd = np.array([0.03, 0.012, 0.03, 0.015, 0.01])
    cos = rng.normal(0.0, sd, (len(knots), 5))
    sin = rng.normal(0.0, sd, (len(knots), 5)) * (np.arange(5) > 0)
    fat = 5.0 + 35.0 * rng.beta(1.3, 1.8)
    tilt = rng.uniform(-0.15, 0.45)
    skin = rng.uniform(1.5, 2.5)
    yc = b - SPINE_TO_BACK_MM - rng.uniform(0.0, 6.0)
    back = yc - b - fat * (1.0 - tilt) - skin + rng.uniform(1.0, 4.0)
    return Body(a, b, yc, knots, cos, sin, fat, tilt, skin, rng.uniform(8.0, 13.0), rng.uniform(3.0, 8.0), back)


def _body_parts(body: Body, diaphragm: Diaphragm) -> list[Part]:
    """Skin and subcutaneous fat, the muscle wall (in three layers at the sides of the abdomen),
    the cavity (visceral fat) and the retroperitoneum."""
    reach = (body.a + 2 * body.fat + 30.0, body.b + 2 * body.fat + 30.0, 600.0)
    box = _box((0.0, body.yc, 0.0), reach)
    coarse = (2.0, 2.0, 8.0)
    return [Part(partial(_skin_field, body=body), box, ((0.0, "skin"), (body.skin, "fat")), resolution=coarse),
            Part(partial(_wall_field, body=body), box, ((0.0, "muscle"),), resolution=coarse),
            Part(partial(_wall_planes_field, body=body, top=diaphragm.floor), box, ((0.0, "fat"),),
                 resolution=(1.0, 1.0, 8.0), into=("muscle",)),
            Part(partial(_cavity_field, body=body), box, ((0.0, "visceral fat"),), resolution=coarse),
            Part(partial(_retroperitoneum_field, body=body), box, ((0.0, "retroperitoneal fat"),),
                 resolution=coarse, into=("visceral fat",))]


def _table_field(axes: Axes, y_top: float, thickness: float, curvature: float, half_width: float) -> np.ndarray:
    """A curved plate under the patient (mm): its top at y_top on the midline, rising to the sides."""
    x, y, _ = _open(axes)
    centre = y_top - thickness / 2 + x ** 2 * curvature
    return np.maximum(np.abs(y - centre) - thickness / 2, np.abs(x) - half_width)


def _table_part(rng: np.random.Generator, body: Body) -> list[Part]:
    """The scanner table under the back (in 80 % of cases)."""
    if rng.random() > 0.8:
        return []
    y_top = body.back - rng.uniform(0.0, 4.0)
    thickness, curvature, half_width = rng.uniform(4.0, 9.0), rng.uniform(0.0003, 0.0009), rng.uniform(200.0, 240.0)
    field = partial(_table_field, y_top=y_top, thickness=thickness, curvature=curvature, half_width=half_width)
    box = ((-half_width, y_top - thickness - 1, -600.0), (half_width, y_top + half_width ** 2 * curvature, 600.0))
    return [Part(field, box, ((0.0, "table"),), resolution=(1.0, 0.5, 50.0), into=("air",))]


# ------------------------------------------------------------------------------------ arms

@dataclass(frozen=True)
class Arms:
    """Both arms hanging beside the trunk, per side (+1 right, -1 left; indexed 0, 1): the centre's y
    (mm), the gap (mm) to the trunk at the widest, the upper arm's half-axes (x, y mm), the forearm's
    scale, the skin and fat (mm) over the muscle, the bones' radius and cortex (mm) and the bones'
    offset (x, y mm) from the arm's centre; the elbow's height z (mm) and the shadow between the
    arms (ARM_SHADOW_*: depth HU, width mm, noise HU, grain mm)."""

    y: tuple[float, float]
    gap: tuple[float, float]
    radii: tuple[tuple[float, float], tuple[float, float]]
    forearm: float
    skin: float
    fat: float
    humerus: float
    forearm_bone: float
    cortex: float
    offset: tuple[tuple[float, float], tuple[float, float]]
    elbow: float
    shadow_hu: float
    shadow_width: float
    shadow_noise: float
    shadow_grain: float


SIDES = (1.0, -1.0)


def draw_arms(rng: np.random.Generator) -> Arms:
    """Arms beside the body within ARM_*'s ranges, and their shadow."""
    def pair(bounds: Sequence[float]) -> tuple[float, float]:
        return float(rng.uniform(*bounds)), float(rng.uniform(*bounds))

    y = float(rng.uniform(*ARM_Y_MM))
    radii = tuple((float(rng.uniform(*ARM_RADII_MM[0])), float(rng.uniform(*ARM_RADII_MM[1]))) for _ in SIDES)
    offset = tuple(tuple(float(v) for v in rng.uniform(-BONE_OFFSET_MM, BONE_OFFSET_MM, 2)) for _ in SIDES)
    return Arms((y + float(rng.normal(0.0, 4.0)), y + float(rng.normal(0.0, 4.0))), pair(ARM_GAP_MM), radii,
                float(rng.uniform(*FOREARM_SCALE)), float(rng.uniform(1.5, 2.5)), float(rng.uniform(*ARM_FAT_MM)),
                float(rng.uniform(*HUMERUS_RADIUS_MM)), float(rng.uniform(*FOREARM_BONE_RADIUS_MM)),
                float(rng.uniform(*BONE_CORTEX_MM)), offset, float(rng.uniform(*ELBOW_Z_MM)),
                float(rng.uniform(*ARM_SHADOW_HU)), float(rng.uniform(*ARM_SHADOW_WIDTH_MM)),
                float(rng.uniform(*ARM_SHADOW_NOISE_HU)), float(rng.uniform(*ARM_SHADOW_GRAIN_MM)))


def _arm_section(arms: Arms, body: Body, k: int, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Side k's arm at heights z (mm): centre x, y and half-axes rx, ry (mm), each (1, 1, nz); the
    forearm (below the elbow, blended over 30 mm) narrower, the arm against the trunk's widest
    point plus its gap."""
    side = SIDES[k]
    t = np.float32(0.0 if side > 0 else np.pi)
    trunk = body.a * _shape_scale(body, t, z) + body.fat + body.skin
    scale = np.interp(z, (arms.elbow - 15.0, arms.elbow + 15.0), (arms.forearm, 1.0)).astype(np.float32)
    rx, ry = (r * scale for r in arms.radii[k])
    x = side * (trunk + arms.gap[k] + rx)
    return tuple(v[None, None, :] for v in (x, np.full_like(x, arms.y[k]), rx, ry))


def _arm_field(axes: Axes, arms: Arms, body: Body, k: int) -> np.ndarray:
    """Side k's arm (mm)."""
    x, y, _ = _open(axes)
    cx, cy, rx, ry = _arm_section(arms, body, k, axes[2])
    return _ellipse(x - cx, y - cy, rx, ry)


def _arm_bones_field(axes: Axes, arms: Arms, body: Body, k: int) -> np.ndarray:
    """Side k's bones (mm): the humerus above the elbow, the radius and ulna side by side below it."""
    x, y, z = _open(axes)
    cx, cy, _, _ = _arm_section(arms, body, k, axes[2])
    bx, by = cx + arms.offset[k][0], cy + arms.offset[k][1]
    humerus = np.maximum(np.hypot(x - bx, y - by) - arms.humerus, arms.elbow - z)
    spread = 1.5 * arms.forearm_bone
    forearm = np.minimum(np.hypot(x - bx - spread, y - by), np.hypot(x - bx + spread, y - by)) - arms.forearm_bone
    return np.minimum(humerus, np.maximum(forearm, z - arms.elbow))


def _arm_parts(arms: Arms, body: Body) -> list[Part]:
    """Both arms beside the trunk: skin, fat and muscle painted into air only, the bones (cortex,
    fatty marrow) into the arms' muscle."""
    parts = []
    for k, side in enumerate(SIDES):
        reach = max(arms.radii[k])
        x_far = body.a * 1.3 + body.fat + body.skin + arms.gap[k] + 2 * reach + 5.0
        lo, hi = sorted((side * 100.0, side * x_far))
        box = ((lo, arms.y[k] - reach - 5.0, -600.0), (hi, arms.y[k] + reach + 5.0, 600.0))
        parts += [Part(partial(_arm_field, arms=arms, body=body, k=k), box,
                       ((0.0, "skin"), (arms.skin, "fat"), (arms.skin + arms.fat, "muscle")),
                       resolution=(1.5, 1.5, 8.0), into=("air",)),
                  Part(partial(_arm_bones_field, arms=arms, body=body, k=k), box,
                       ((0.0, "cortical bone"), (arms.cortex, "fat")), resolution=(1.0, 1.0, 4.0), into=("muscle",))]
    return parts


# ------------------------------------------------------------------------------------ chest

@dataclass(frozen=True)
class Diaphragm:
    """Three paraboloid caps: the right and left domes and the central tendon under the heart, each
    (x, y, z) of its apex (mm); fall: mm the domes fall over 70 mm from their apex (sideways and
    backwards; they fall less towards the front, where the diaphragm meets the costal margin);
    nowhere lower than floor (mm), the bottom of the posterior recesses."""

    right: tuple[float, float, float]
    left: tuple[float, float, float]
    centre: tuple[float, float, float]
    fall: float
    floor: float


def _diaphragm_z(d: Diaphragm, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (mm) of the diaphragm above (x, y)."""
    def cap(apex: tuple[float, float, float], wx: float, wy: float) -> np.ndarray:
        wy = np.where(y > apex[1], 1.6 * wy, wy)
        return apex[2] - d.fall * (((x - apex[0]) / wx) ** 2 + ((y - apex[1]) / wy) ** 2)
    domes = np.maximum(np.maximum(cap(d.right, 70.0, 70.0), cap(d.left, 70.0, 70.0)), cap(d.centre, 90.0, 60.0))
    return np.maximum(domes, d.floor)


def _draw_diaphragm(rng: np.random.Generator, spine: Spine) -> Diaphragm:
    """Domes at a random height (breathing), the left 10-25 mm below the right; the posterior
    recesses down to about T12/L1."""
    right = DOME_MM + rng.normal(0.0, 12.0)
    return Diaphragm((70.0 + rng.normal(0, 8), rng.normal(0, 8), right),
                     (-70.0 + rng.normal(0, 8), rng.normal(0, 8), right - rng.uniform(10.0, 25.0)),
                     (-5.0, 40.0, right - rng.uniform(20.0, 35.0)), rng.uniform(60.0, 80.0),
                     spine.z0 + rng.uniform(0.7, 1.5) * spine.pitch)


def _lung_field(axes: Axes, body: Body, diaphragm: Diaphragm) -> np.ndarray:
    """The cavity above the diaphragm (mm)."""
    x, y, z = _open(axes)
    return np.maximum(_cavity_field(axes, body), _diaphragm_z(diaphragm, x, y) - z)


def _mediastinum_field(axes: Axes, diaphragm: Diaphragm) -> np.ndarray:
    """The mediastinum above the diaphragm (mm): between the lungs, in front of the spine; half as
    wide 60 mm above CHEST_FROM_MM, above the heart."""
    x, y, z = _open(axes)
    width = 75.0 - 37.0 * np.clip((z - CHEST_FROM_MM) / 60.0, 0.0, 1.0)
    return np.maximum(_ellipse(x + 15.0, y - 30.0, width, 70.0), _diaphragm_z(diaphragm, x, y) - z)


def _heart_field(axes: Axes, centre: np.ndarray, rotation: np.ndarray, radii: np.ndarray,
                 diaphragm: Diaphragm) -> np.ndarray:
    """The heart (mm): an ellipsoid resting on the diaphragm."""
    x, y, z = _open(axes)
    q = _rotated(axes, centre, rotation)
    return np.maximum(_ellipsoid(q, (0.0, 0.0, 0.0), radii), _diaphragm_z(diaphragm, x, y) + 1.0 - z)


def _chest_parts(rng: np.random.Generator, body: Body, diaphragm: Diaphragm) -> list[Part]:
    """Lung bases (with the diaphragm's muscle under them), mediastinal fat and the heart."""
    lungs = Part(partial(_lung_field, body=body, diaphragm=diaphragm),
                 ((-body.a, body.yc - body.b, diaphragm.floor), (body.a, body.yc + body.b, 600.0)),
                 ((0.0, "muscle"), (4.0, "lung")), resolution=(2.0, 2.0, 2.0))
    mediastinum = Part(partial(_mediastinum_field, diaphragm=diaphragm),
                       ((-90.0, -40.0, diaphragm.centre[2] - 60), (60.0, 100.0, 600.0)), ((0.0, "fat"),))
    centre = np.array([-25.0, 45.0, diaphragm.centre[2] + 45.0]) + rng.normal(0.0, 5.0, 3)
    radii = np.array([65.0, 50.0, 50.0]) * rng.uniform(0.9, 1.1)
    rotation = _rotation((0.0, 0.0, np.radians(-30.0 + rng.normal(0.0, 8.0))))
    heart = Part(partial(_heart_field, centre=centre, rotation=rotation, radii=radii, diaphragm=diaphragm),
                 _box(centre, radii.max() + 5.0), ((0.0, "myocardium"), (9.0, "blood")), label=0)
    return [lungs, mediastinum, heart]


def _curve_tubes(rng: np.random.Generator, lo: Sequence[float], hi: Sequence[float], step: float) -> dict:
    """Two smooth random fields (features about step mm) over the box lo..hi and the mm per unit of
    field that makes tubes along their common zero curves (_curve_tubes_field's a, b, length)."""
    return {"a": draw_field(rng, lo, hi, step), "b": draw_field(rng, lo, hi, step), "length": np.sqrt(2.0) * step / 1.3}


def _curve_tubes_field(axes: Axes, a: SmoothField, b: SmoothField, length: float, radius: float) -> np.ndarray:
    """Tubes (mm) of the given radius along the curves where the two smooth fields are both zero
    (length: mm per unit of field): small-bowel loops, vessels in the lungs."""
    return np.sqrt(field_on(a, axes) ** 2 + field_on(b, axes) ** 2) * length - radius


def _upper_chest_parts(rng: np.random.Generator, body: Body, spine: Spine) -> list[Part]:
    """Above CHEST_FROM_MM only: the upper ribs, trachea and main bronchi, great vessels and the
    vessels in the lungs (drawn after everything else, so the rest of a patient does not change)."""
    floor = CHEST_FROM_MM
    parts = _rib_parts(_rib_tubes(body, spine, rng, UPPER_RIBS, UPPER_RIB_LEVEL), floor)
    shift = rng.normal(0.0, 5.0, 3)
    points, radius = TRACHEA
    airway = [spline_tube(np.add(points, shift), [radius] * len(points), step=5.0)]
    airway += [spline_tube(np.add(p, shift), [radius * 0.8, radius * 0.65, radius * 0.5], step=5.0) for p in BRONCHI]
    parts.append(_above(tube_part(airway, ((0.0, "gut wall"), (2.0, "gas"))), floor))
    carina = np.add(points[-1], shift)
    for vessel, r in GREAT_VESSELS:
        tube = spline_tube(carina + np.asarray(vessel) + rng.normal(0.0, 4.0, (len(vessel), 3)),
                           [r * rng.uniform(0.85, 1.15)] * len(vessel), step=5.0)
        parts.append(_above(tube_part([tube], ((0.0, "blood"),)), floor))
    lo, hi = (-body.a, body.yc - body.b, floor), (body.a, body.yc + body.b, 600.0)
    step = rng.uniform(*LUNG_VESSEL_STEP_MM)
    vessels = partial(_curve_tubes_field, **_curve_tubes(rng, lo, hi, step), radius=rng.uniform(*LUNG_VESSEL_RADIUS_MM))
    parts.append(Part(vessels, (lo, hi), ((0.0, "blood"),), resolution=(1.5, 1.5, 1.5), into=("lung",)))
    return parts


# ------------------------------------------------------------------------------------ muscles

@dataclass(frozen=True)
class Column:
    """A structure along z with an elliptic cross-section: at heights z (mm, increasing) its centre
    (x, y) and half-axes (rx, ry), linear in between; nothing beyond the first and last z."""

    z: tuple[float, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    rx: tuple[float, ...]
    ry: tuple[float, ...]


def _column_field(axes: Axes, column: Column) -> np.ndarray:
    """Signed distance (mm) to a column."""
    x, y, _ = _open(axes)
    z = axes[2]
    cx, cy, rx, ry = (np.interp(z, column.z, v).astype(np.float32)[None, None, :]
                      for v in (column.x, column.y, column.rx, column.ry))
    ends = np.maximum(column.z[0] - z, z - column.z[-1])[None, None, :]
    return np.maximum(_ellipse(x - cx, y - cy, rx, ry), ends)


def _column_part(column: Column, layers: tuple[tuple[float, str], ...], **kwargs) -> Part:
    """A part made of one column."""
    lo = (min(column.x) - max(column.rx) - 2, min(column.y) - max(column.ry) - 2, column.z[0])
    hi = (max(column.x) + max(column.rx) + 2, max(column.y) + max(column.ry) + 2, column.z[-1])
    return Part(partial(_column_field, column=column), (lo, hi), layers, resolution=(1.5, 1.5, 4.0), **kwargs)


def _paraspinal_field(axes: Axes, spine: Spine, body: Body, size: float) -> np.ndarray:
    """The erector spinae and multifidus (mm): one mass behind the spine, widest in the lumbar
    region, inside the muscle wall."""
    x, y, _ = _open(axes)
    z = axes[2]
    levels = spine.z0 + spine.pitch * np.array([-6.0, -2.0, 0.0, 4.0])
    width, depth = ((size * np.interp(z, levels, v)).astype(np.float32)[None, None, :]
                    for v in ((42.0, 55.0, 52.0, 44.0), (34.0, 38.0, 36.0, 30.0)))
    ys = _spine_y(spine, z).astype(np.float32)[None, None, :]
    return np.maximum(_ellipse(x, y - ys + 22.0 + depth, width, depth), _wall_field(axes, body))


def _muscle_parts(rng: np.random.Generator, spine: Spine, body: Body) -> list[Part]:
    """Erector spinae, and on both sides psoas (growing towards the pelvis) and quadratus lumborum."""
    z0, p = spine.z0, spine.pitch
    size = rng.uniform(0.8, 1.2)
    parts = [Part(partial(_paraspinal_field, spine=spine, body=body, size=size),
                  ((-80.0, -160.0, -600.0), (80.0, 20.0, 600.0)), ((0.0, "muscle"),), resolution=(1.5, 1.5, 4.0))]
    for side in (1.0, -1.0):
        zs = (z0 + 1.5 * p, z0, z0 - 2.2 * p, z0 - 4.5 * p, z0 - 7.0 * p)
        ys = [float(_spine_y(spine, z)) for z in zs]
        psoas = Column(zs[::-1], tuple(side * v for v in (30.0, 38.0, 46.0, 54.0, 60.0))[::-1],
                       tuple(y + d for y, d in zip(ys, (-2.0, 0.0, 3.0, 10.0, 18.0)))[::-1],
                       tuple(size * v for v in (6.0, 13.0, 19.0, 23.0, 21.0))[::-1],
                       tuple(size * v for v in (5.0, 11.0, 16.0, 20.0, 20.0))[::-1])
        zq = (z0 - 3.3 * p, z0 - 0.5 * p, z0 + 1.4 * p)
        quadratus = Column(zq, (side * 70.0, side * 65.0, side * 55.0), (-42.0, -40.0, -35.0),
                           (14.0 * size, 16.0 * size, 8.0), (8.0, 9.0, 6.0))
        parts += [_column_part(m, ((0.0, "muscle"),)) for m in (quadratus, psoas)]
    return parts


# ------------------------------------------------------------------------------------ skeleton

@dataclass(frozen=True)
class Spine:
    """Vertebrae stacked along z: level k (0: L1, 1: T12, -1: L2 ...) centred at z0 + (k + 0.5) * pitch;
    discs of disc mm; the column's centre at y = _spine_y; canal radius mm."""

    z0: float
    pitch: float
    disc: float
    lordosis: float
    canal: float


def _spine_y(spine: Spine, z: np.ndarray | float) -> np.ndarray:
    """y (mm) of the vertebral bodies' centre: a lumbar lordosis, the sacrum tilting back."""
    sacrum = spine.z0 - 4.5 * spine.pitch
    lordosis = spine.lordosis * np.exp(-(((z - (spine.z0 - 2.0 * spine.pitch)) / (2.5 * spine.pitch)) ** 2))
    return lordosis - 0.55 * np.maximum(sacrum - z, 0.0)


def _vertebra_size(spine: Spine, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Half-width and half-depth (mm) of the vertebral bodies: larger down to L5, the sacrum widest
    at its alae (S1) and narrowing to the coccyx."""
    levels = spine.z0 + spine.pitch * np.array([SACRUM_LEVELS[1], -5.1, -4.6, -2.0, 0.0, 3.0, 8.0])
    return (np.interp(z, levels, (12.0, 46.0, 26.0, 25.0, 22.0, 19.0, 16.0)),
            np.interp(z, levels, (7.0, 15.0, 17.0, 17.0, 16.0, 14.0, 13.0)))


def _level_z(spine: Spine, z: np.ndarray) -> np.ndarray:
    """z (mm) relative to the centre of the nearest vertebra."""
    return (z - spine.z0) % spine.pitch - spine.pitch / 2


def _canal_y(spine: Spine, z: np.ndarray) -> np.ndarray:
    """y (mm) of the spinal canal's centre."""
    return _spine_y(spine, z) - 0.75 * _vertebra_size(spine, z)[1] - spine.canal - 1.0


def _vertebral_section(axes: Axes, spine: Spine) -> np.ndarray:
    """The cross-section of the vertebral bodies (mm), flat at the back, at every z."""
    x, y, _ = _open(axes)
    z = axes[2]
    w, d = (v.astype(np.float32)[None, None, :] for v in _vertebra_size(spine, z))
    ys = _spine_y(spine, z).astype(np.float32)[None, None, :]
    return _smax(_ellipse(x, y - ys, w, d), ys - 0.75 * d - y, 3.0)


def _spine_zone(axes: Axes, spine: Spine) -> np.ndarray:
    """Where organs must not reach (mm): the vertebral bodies plus 6 mm and the paravertebral
    space behind them."""
    x, y, _ = _open(axes)
    ys = _spine_y(spine, axes[2]).astype(np.float32)[None, None, :]
    return _smin(_vertebral_section(axes, spine) - 6.0, _ellipse(x, y - ys + 45.0, 48.0, 50.0), 6.0)


def _vertebral_bodies_field(axes: Axes, spine: Spine) -> np.ndarray:
    """Vertebral bodies (mm): the cross-section cut into levels by the discs, down to the sacrum,
    whose vertebrae are fused."""
    z = axes[2]
    height = np.abs(_level_z(spine, z)) - (spine.pitch - spine.disc) / 2
    height = np.where(z < spine.z0 + (SACRUM_LEVELS[0] - 0.5) * spine.pitch, -spine.disc, height)
    return _smax(_vertebral_section(axes, spine), height.astype(np.float32)[None, None, :], 1.5)


def _arch_field(axes: Axes, spine: Spine) -> np.ndarray:
    """Vertebral arches (mm): a 5 mm ring around the canal at each level."""
    x, y, _ = _open(axes)
    z = axes[2]
    r = np.hypot(x, y - _canal_y(spine, z).astype(np.float32)[None, None, :])
    height = np.abs(_level_z(spine, z)) - (spine.pitch - spine.disc) / 2 + 2.0
    return _smax(np.abs(r - spine.canal - 2.5) - 2.5, height.astype(np.float32)[None, None, :], 1.5)


def _canal_field(axes: Axes, spine: Spine) -> np.ndarray:
    """The spinal canal (mm)."""
    x, y, _ = _open(axes)
    return np.hypot(x, y - _canal_y(spine, axes[2]).astype(np.float32)[None, None, :]) - spine.canal


def _draw_spine(rng: np.random.Generator) -> Spine:
    """Vertebral pitch, disc height, lordosis and canal of one patient."""
    return Spine(rng.normal(0.0, 8.0), rng.uniform(33.0, 38.0), rng.uniform(7.0, 10.0),
                 rng.uniform(3.0, 12.0), rng.uniform(8.0, 10.5))


def _level_centre(spine: Spine, k: int) -> float:
    """z (mm) of the centre of vertebra k."""
    return spine.z0 + (k + 0.5) * spine.pitch


def _process_tubes(spine: Spine) -> tuple[list[Tube], list[Tube]]:
    """Spinous processes (pointing back and down) and transverse processes (long in the lumbar
    spine) of the levels from the sacrum to T4."""
    spinous, transverse = [], []
    for k in range(-5, 10):
        zc = _level_centre(spine, k)
        yk = float(_canal_y(spine, zc))
        back = yk - spine.canal - 3.0
        fall = 10.0 if k <= 0 else 20.0
        spinous.append(Tube(np.array([[0.0, back, zc], [0.0, back - 28.0, zc - fall]]), np.array([5.0, 4.0]),
                            (0.6, 1.0, 1.5)))
        length = 26.0 if -4 <= k <= 0 else 14.0
        for side in (1.0, -1.0):
            root = [side * (spine.canal + 3.0), yk, zc]
            tip = [side * (spine.canal + 3.0 + length), yk - 6.0, zc]
            transverse.append(Tube(np.array([root, tip]), np.array([4.5, 3.5]), (1.0, 0.8, 1.3)))
    return spinous, transverse


def _spine_parts(spine: Spine) -> list[Part]:
    """Discs, vertebral bodies, arches, canal and processes."""
    bone = ((0.0, "cortical bone"), (1.5, "cancellous bone"))
    fine = (1.0, 1.0, 1.0)
    tip = spine.z0 + SACRUM_LEVELS[1] * spine.pitch
    column_box = ((-50.0, -70.0, tip), (50.0, 40.0, 600.0))
    canal_box = ((-22.0, -80.0, tip), (22.0, 0.0, 600.0))
    spinous, transverse = _process_tubes(spine)
    return [Part(partial(_vertebral_section, spine=spine), column_box, ((0.0, "disc"),), resolution=fine),
            Part(partial(_vertebral_bodies_field, spine=spine), column_box, bone, resolution=fine),
            Part(partial(_arch_field, spine=spine), canal_box, bone, resolution=fine),
            tube_part(spinous, bone), tube_part(transverse, bone),
            Part(partial(_canal_field, spine=spine), canal_box, ((0.0, "csf"),), resolution=fine)]


def _rib_tubes(body: Body, spine: Spine, rng: np.random.Generator, table: Sequence[tuple] = RIBS,
               first_level: int = 1) -> list[tuple[Tube, Tube | None]]:
    """Ribs of `table` (default 12 to 7) on both sides, from vertebra level first_level up, each with
    its costal cartilage (None for floating ribs): from the vertebra along the inside of the muscle
    wall, falling towards the front."""
    ribs = []
    inset = body.muscle / 2 + 1.0
    for k, (end, cartilage_end, fall, rise) in enumerate(table, start=first_level):
        zc = _level_centre(spine, k)
        w = float(_vertebra_size(spine, zc)[0])
        fall *= rng.uniform(0.85, 1.15)
        for side in (1.0, -1.0):
            t = np.linspace(RIB_START, end, 10)
            z = zc - 8.0 - fall * ((t - RIB_START) / (end - RIB_START)) ** 1.3
            x, y = _core_point(body, t if side > 0 else np.pi - t, z, inset)
            head = [[side * (w + 2.0), float(_spine_y(spine, zc)) - 4.0, zc],
                    [side * (spine.canal + 20.0), float(_canal_y(spine, zc)) - 4.0, zc - 3.0]]
            rib = spline_tube(np.concatenate([head, np.stack([x, y, z], axis=1)]), [3.5] * (len(t) + 2),
                              step=5.0, stretch=(1.0, 1.0, 1.5))
            cartilage = None
            if cartilage_end is not None:
                tc = np.linspace(end, cartilage_end, 6)
                zk = z[-1] + rise * (tc - end) / (cartilage_end - end)
                xk, yk = _core_point(body, tc if side > 0 else np.pi - tc, zk, inset)
                cartilage = spline_tube(np.stack([xk, yk, zk], axis=1), [4.5] * len(tc), step=5.0,
                                        stretch=(1.0, 1.0, 1.4))
            ribs.append((rib, cartilage))
    return ribs


def _rib_parts(ribs: Sequence[tuple[Tube, Tube | None]], floor: float | None = None) -> list[Part]:
    """Ribs (cortical shell, marrow) and their cartilages, one part each; above z = floor (mm) only."""
    parts = []
    for rib, cartilage in ribs:
        parts.append(_above(tube_part([rib], ((0.0, "cortical bone"), (1.2, "cancellous bone"))), floor))
        if cartilage is not None:
            parts.append(_above(tube_part([cartilage], ((0.0, "cartilage"),)), floor))
    return parts


def _above(part: Part, floor: float | None) -> Part:
    """The part painted only above z = floor (mm; None: everywhere)."""
    if floor is None:
        return part
    lo, hi = part.box
    return replace(part, box=((lo[0], lo[1], max(lo[2], floor)), hi))


PELVIS_CREST_LEVEL = -3.5  # the iliac crest's mean height, in vertebral pitches from z0 (beside L5)
# The iliac wing: an arc of an elliptic cone around a vertical axis in front of it, at x = +-5 mm,
# y = 55 mm, from the posterior superior iliac spine by the sacrum (angle WING_ARC_RAD[0] about the
# axis, 0 pointing outwards, positive forwards) to the anterior superior spine (WING_ARC_RAD[1]),
# bulging backwards and outwards, the iliac fossa facing forwards and inwards.
WING_AXIS_MM = (5.0, 55.0)
WING_DEPTH = 0.95  # the cone's depth (y) over its width (x)
WING_ARC_RAD = (-1.3, -0.1)
WING_HEIGHT_MM = 100.0  # from the crest down to the acetabulum's roof
# The gluteal muscles reach GLUTEAL_ABOVE_CREST_MM above the iliac crest, outside the wing, their
# top a dome falling away from their centre line (a paraboloid of this radius of curvature, mm).
GLUTEAL_ABOVE_CREST_MM = 10.0
GLUTEAL_DOME_MM = 70.0


def _wing_cone(axes: Axes, side: float, crest: float, radius: float, flare: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One side's iliac cone (mm): offsets dx (outwards) and dy (forwards) from its axis, the
    elliptic distance from the axis, and the cone's radius at each z (`radius` at the crest,
    `flare` mm less per mm down)."""
    x, y, z = _open(axes)
    dx, dy = side * x - WING_AXIS_MM[0], y - WING_AXIS_MM[1]
    return dx, dy, np.hypot(dx, dy / WING_DEPTH), radius - flare * (crest - z)


def _iliac_field(axes: Axes, side: float, crest: float, radius: float, flare: float, thickness: float,
                 body: Body) -> np.ndarray:
    """One iliac wing (mm): a curved plate flaring outwards from the acetabulum up to the crest (part
    of the elliptic cone of _wing_cone), open anteromedially, inside the muscle wall."""
    z = _open(axes)[2]
    dx, dy, reach, r = _wing_cone(axes, side, crest, radius, flare)
    shell = np.abs(reach - r) - thickness / 2
    angle = np.arctan2(dy, dx)
    wedge = np.maximum(angle - WING_ARC_RAD[1], WING_ARC_RAD[0] - angle) * 60.0
    return np.maximum(np.maximum(shell, wedge), np.maximum(z - crest, _wall_field(axes, body) + 4.0))


@dataclass(frozen=True)
class Pelvis:
    """The iliac wings: z of the crest (mm), the wing's radius there (mm), how many mm it narrows
    per mm down (flare) and its thickness (mm)."""

    crest: float
    radius: float
    flare: float
    thickness: float


def _mean_crest(spine: Spine) -> float:
    """z (mm) of the iliac crest before its case-to-case scatter: beside L5 (PELVIS_CREST_LEVEL)."""
    return spine.z0 + PELVIS_CREST_LEVEL * spine.pitch


def _draw_pelvis(rng: np.random.Generator, spine: Spine) -> Pelvis:
    """The iliac crest beside L5 (_mean_crest, scattered) and the wings' size."""
    crest = _mean_crest(spine) + rng.normal(0.0, 8.0)
    return Pelvis(crest, rng.uniform(105.0, 120.0), rng.uniform(0.3, 0.4), rng.uniform(6.0, 9.0))


def _pelvis_parts(pelvis: Pelvis, body: Body) -> list[Part]:
    """Iliac wings, each with the iliacus muscle lining its fossa."""
    radius, crest = pelvis.radius, pelvis.crest
    parts = []
    for side in (1.0, -1.0):
        (ax, ay), depth = WING_AXIS_MM, WING_DEPTH
        box = ((side * ax - radius - 10, ay - depth * radius - 10, crest - WING_HEIGHT_MM),
               (side * ax + radius + 10, ay + depth * radius + 10, crest + 1.0))
        wing = partial(_iliac_field, side=side, crest=crest, flare=pelvis.flare, body=body)
        parts += [Part(partial(wing, radius=radius - 12.0, thickness=24.0), box, ((0.0, "muscle"),),
                       resolution=(1.5, 1.5, 3.0)),
                  Part(partial(wing, radius=radius, thickness=pelvis.thickness), box,
                       ((0.0, "cortical bone"), (2.0, "cancellous bone")), resolution=(1.0, 1.0, 2.0))]
    return parts


def _gluteal_field(axes: Axes, side: float, centre: Sequence[float], radii: Sequence[float], pelvis: Pelvis,
                   sidewall: float, planes: SmoothField) -> np.ndarray:
    """One side's gluteal and hip muscles (mm): an ellipsoid of muscle under a dome just above the
    iliac crest, outside the iliac wing's cone and lateral to the pelvic sidewall (|x| > sidewall
    mm), split by thin planes where the smooth random field `planes` crosses zero (positive there:
    left as fat)."""
    x, y, z = _open(axes)
    _, _, reach, r = _wing_cone(axes, side, pelvis.crest, pelvis.radius, pelvis.flare)
    inside_wing = np.maximum(r, 0.0) - reach
    mass = np.maximum(np.maximum(_ellipsoid((x, y, z), centre, radii), inside_wing), sidewall - side * x)
    dome = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2.0 * GLUTEAL_DOME_MM)
    mass = np.maximum(mass, z - pelvis.crest - GLUTEAL_ABOVE_CREST_MM + dome)
    return np.maximum(mass, 1.2 - 25.0 * np.abs(field_on(planes, axes)))


def _ellipsoid_field(axes: Axes, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid."""
    return _ellipsoid(_open(axes), centre, radii)


def _cup_field(axes: Axes, centre: np.ndarray, inner: float, outer: float, opening: np.ndarray) -> np.ndarray:
    """A spherical shell (mm) between radii inner and outer around centre, open towards the unit
    vector `opening` (the acetabulum's cup over the femoral head)."""
    d = [g - c for g, c in zip(_open(axes), centre)]
    distance = np.sqrt(sum(di ** 2 for di in d))
    facing = sum(di * oi for di, oi in zip(d, opening))
    return np.maximum(np.maximum(distance - outer, inner - distance), facing - 0.25 * inner)


def _pelvic_organ_parts(rng: np.random.Generator, body: Body, spine: Spine, pelvis: Pelvis) -> list[Part]:
    """The true pelvis and the hips below the iliac crest: gluteal and hip muscles with fat planes
    between them, the urinary bladder (urine behind a thin wall), the rectum against the sacrum,
    and the bones: femoral heads in their acetabula, necks, trochanters and shafts, the pubic rami
    meeting at the symphysis and the ischia. Painted before the organs and the gut, which fill only
    the fat left over."""
    head_z = pelvis.crest - rng.uniform(95.0, 115.0)
    head_x, head_y, head_r = rng.uniform(85.0, 100.0), rng.uniform(15.0, 35.0), rng.uniform(21.0, 26.0)
    front = body.yc + body.b - body.muscle
    parts = []
    for side in (1.0, -1.0):
        centre = (side * body.a * rng.uniform(0.55, 0.7), body.yc - body.b * rng.uniform(0.35, 0.55),
                  pelvis.crest - rng.uniform(45.0, 75.0))
        radii = (body.a * rng.uniform(0.5, 0.65), body.b * rng.uniform(0.6, 0.8), rng.uniform(110.0, 150.0))
        lo, hi = _box(centre, radii)
        planes = draw_field(rng, lo, hi, 30.0)
        parts.append(Part(partial(_gluteal_field, side=side, centre=centre, radii=radii, pelvis=pelvis,
                                  sidewall=head_x - rng.uniform(25.0, 40.0), planes=planes), (lo, hi),
                          ((0.0, "muscle"),), into=GUT_SPACE, resolution=(1.5, 1.5, 3.0)))

    bladder_r = np.array([rng.uniform(30.0, 65.0), rng.uniform(25.0, 50.0), rng.uniform(25.0, 55.0)])
    bladder_c = (rng.normal(0.0, 8.0), front - bladder_r[1] - rng.uniform(8.0, 25.0), head_z + rng.uniform(0.0, 30.0))
    parts.append(Part(partial(_ellipsoid_field, centre=bladder_c, radii=bladder_r),
                      _box(bladder_c, bladder_r + 5.0), ((0.0, "gut wall"), (GUT_WALL_MM, "urine")),
                      into=(*GUT_SPACE, "muscle"), resolution=(1.5, 1.5, 1.5)))

    zs = np.linspace(pelvis.crest - 40.0, head_z - 90.0, 6)
    rectum = spline_tube([(rng.normal(0.0, 6.0), float(_spine_y(spine, z)) + 38.0, z) for z in zs],
                         rng.uniform(12.0, 20.0) * np.array([0.8, 1.0, 1.1, 1.2, 1.0, 0.7]), step=4.0)
    parts.append(tube_part([rectum], ((0.0, "gut wall"), (GUT_WALL_MM, "faeces")), into=(*GUT_SPACE, "muscle")))

    bone = ((0.0, "cortical bone"), (2.0, "cancellous bone"))
    symphysis = np.array([0.0, front - rng.uniform(8.0, 15.0), head_z - rng.uniform(20.0, 35.0)])
    for side in (1.0, -1.0):
        head = np.array([side * head_x, head_y, head_z])
        trochanter = head + (side * rng.uniform(40.0, 50.0), -rng.uniform(0.0, 10.0), -rng.uniform(20.0, 30.0))
        knee = trochanter + (-side * rng.uniform(15.0, 30.0), rng.uniform(0.0, 20.0), -400.0)
        tuberosity = head + (-side * rng.uniform(15.0, 25.0), -rng.uniform(35.0, 45.0), -rng.uniform(50.0, 65.0))
        opening = np.array([side, 0.0, -1.0]) / np.sqrt(2.0)
        parts += [Part(partial(_cup_field, centre=head, inner=head_r + 2.0, outer=head_r + 10.0, opening=opening),
                       _box(head, head_r + 12.0), bone, resolution=(1.0, 1.0, 1.0)),
                  Part(partial(_cup_field, centre=head, inner=0.0, outer=head_r + 2.0, opening=-opening),
                       _box(head, head_r + 4.0), ((0.0, "cartilage"),), resolution=(1.0, 1.0, 1.0)),
                  tube_part([Tube(np.array([head, trochanter]), np.array([head_r, 16.0])),
                             Tube(np.array([trochanter + (-side * 10.0, 0.0, 0.0), knee]), np.array([17.0, 13.0])),
                             Tube(np.array([head + (-side * 5.0, head_r, -8.0), symphysis + (side * 6.0, 0.0, 0.0)]),
                                  np.array([9.0, 8.0])),
                             Tube(np.array([head + (-side * 5.0, -head_r, -10.0), tuberosity]), np.array([11.0, 13.0])),
                             Tube(np.array([tuberosity, symphysis + (side * 6.0, 0.0, -15.0)]), np.array([8.0, 7.0]))],
                            bone)]
    return parts


# ------------------------------------------------------------------------------------ organs

@dataclass(frozen=True)
class Frame:
    """An organ's pose and shape variation: centre (mm), rotation (columns: local axes in the
    world), size factors along the local axes, a smooth displacement field (warp_mm * unit field,
    3 components) and a lobulation field (lobes_mm * unit field, added to the distance)."""

    centre: np.ndarray
    rotation: np.ndarray
    size: np.ndarray
    warp: SmoothField
    warp_mm: float
    lobes: SmoothField
    lobes_mm: float

    def to_world(self, local: Sequence[Sequence[float]]) -> np.ndarray:
        """World points (n, 3) mm of points (n, 3) in the organ's local (unscaled) coordinates."""
        return self.centre + (np.asarray(local, float) * self.size) @ self.rotation.T

    def moved(self, offset: Sequence[float]) -> Frame:
        """The same organ, shape and texture, moved by offset (mm): its warp and lobulation fields move with it."""
        return replace(self, centre=self.centre + offset,
                       warp=replace(self.warp, lo=tuple(np.add(self.warp.lo, offset))),
                       lobes=replace(self.lobes, lo=tuple(np.add(self.lobes.lo, offset))))

    def box(self, lo: Sequence[float], hi: Sequence[float], margin: float) -> tuple:
        """The world box (mm) around the local box lo..hi, plus the warp, lobulation and margin mm."""
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
        world = self.to_world(corners)
        pad = 3.0 * (self.warp_mm + self.lobes_mm) + margin
        return tuple(world.min(0) - pad), tuple(world.max(0) + pad)


def _draw_frame(rng: np.random.Generator, centre: Sequence[float], basis: np.ndarray, reach: float, *,
                shift_mm: float = 8.0, angle_deg: float = 8.0, size_sd: float = 0.07, axis_sd: float = 0.05,
                warp_mm: float = 5.0, lobe_step: float = 15.0, lobes_mm: float = 2.5) -> Frame:
    """A random pose, size and shape variation around a nominal centre (mm) and orientation."""
    c = np.asarray(centre, float) + rng.normal(0.0, shift_mm, 3)
    rotation = _rotation(np.radians(rng.normal(0.0, angle_deg, 3))) @ basis
    size = np.clip(rng.normal(1.0, size_sd) * rng.normal(1.0, axis_sd, 3), 0.8, 1.22)
    lo, hi = c - reach, c + reach
    warp = draw_field(rng, lo, hi, reach / 2.5, components=3)
    return Frame(c, rotation, size, warp, warp_mm, draw_field(rng, lo, hi, lobe_step), lobes_mm)


def _lobes_box(frame: Frame, lobes: Sequence[tuple]) -> tuple:
    """The world box (mm) of an organ made of (centre, half-axes, taper) lobes in its frame."""
    lo = np.min([np.subtract(c, r) for c, r, _ in lobes], axis=0)
    hi = np.max([np.add(c, r) for c, r, _ in lobes], axis=0)
    return frame.box(lo, hi, 5.0)


def _rotated(axes: Axes, centre: Sequence[float], rotation: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local coordinates (mm) of the grid points in a frame with this centre and rotation."""
    p = [g - c for g, c in zip(_open(axes), centre)]
    return tuple(p[0] * rotation[0, i] + p[1] * rotation[1, i] + p[2] * rotation[2, i] for i in range(3))


def _local(axes: Axes, frame: Frame) -> tuple[np.ndarray, ...]:
    """An organ's local coordinates (mm, divided by its size) of the grid points, displaced by its warp."""
    u = frame.warp_mm * field_on(frame.warp, axes)
    p = [g - c - ui for g, c, ui in zip(_open(axes), frame.centre, u)]
    r = frame.rotation
    return tuple((p[0] * r[0, i] + p[1] * r[1, i] + p[2] * r[2, i]) / frame.size[i] for i in range(3))


def _lobulation(axes: Axes, frame: Frame) -> np.ndarray:
    """The lobulation (mm) added to an organ's distance."""
    return frame.lobes_mm * field_on(frame.lobes, axes)


def _kidney_field(axes: Axes, frame: Frame) -> np.ndarray:
    """A kidney (mm): a bean whose hilum (local +x) is notched."""
    q = _local(axes, frame)
    rw, rt, rl = KIDNEY_RADII
    notch = _ellipsoid(q, (1.0 * rw, 0.0, 0.0), (0.38 * rw, 0.45 * rt, 0.35 * rl))
    return _smax(_ellipsoid(q, (0.0, 0.0, 0.0), KIDNEY_RADII), -notch, 4.0) + _lobulation(axes, frame)


def _renal_sinus_field(axes: Axes, frame: Frame) -> np.ndarray:
    """The renal sinus (mm): fat around the pelvis, opening at the hilum."""
    rw, rt, rl = KIDNEY_RADII
    return _ellipsoid(_local(axes, frame), (0.45 * rw, 0.0, 0.0), (0.45 * rw, 0.36 * rt, 0.55 * rl))


def _renal_pelvis_field(axes: Axes, frame: Frame) -> np.ndarray:
    """The renal pelvis (mm), in the sinus towards the hilum."""
    rw, rt, rl = KIDNEY_RADII
    return _ellipsoid(_local(axes, frame), (0.6 * rw, 0.0, -0.1 * rl), (0.3 * rw, 0.28 * rt, 0.3 * rl))


def _medulla_field(axes: Axes, frame: Frame, offset: float) -> np.ndarray:
    """Medullary pyramids (mm): under the cortex, outside the sinus, split by columns of Bertin."""
    q = _local(axes, frame)
    rw, rt, rl = KIDNEY_RADII
    depth = _ellipsoid(q, (0.0, 0.0, 0.0), KIDNEY_RADII) + KIDNEY_CORTEX_MM
    sinus = 2.0 - _ellipsoid(q, (0.45 * rw, 0.0, 0.0), (0.45 * rw, 0.36 * rt, 0.55 * rl))
    columns = 5.0 * (0.1 - np.cos(2 * np.pi * q[2] / 26.0 + offset) * np.cos(3 * np.arctan2(q[1], q[0]) + offset))
    return np.maximum(np.maximum(depth, sinus), columns)


def _kidney_frame(rng: np.random.Generator, side: float, breath: float) -> Frame:
    """A kidney's pose: long axis tilted (upper pole medial and posterior), hilum anteromedial."""
    angle = np.radians(rng.uniform(28.0, 45.0))
    hilum = (-side * np.cos(angle), np.sin(angle), 0.0)
    basis = _basis_from(hilum, (-side * 0.2, -0.15, 1.0))
    centre = np.asarray(KIDNEY_CENTRE[side]) + (0.0, 0.0, 0.6 * breath)
    return _draw_frame(rng, centre, basis, 90.0, shift_mm=6.0, size_sd=0.05, warp_mm=3.0, lobe_step=20.0,
                       lobes_mm=1.0)


def _kidney_parts(rng: np.random.Generator, frame: Frame, sinus_labelled: bool = False) -> list[Part]:
    """A kidney: cortex, medulla, sinus fat and pelvis inside it. The label covers cortex, medulla
    and pelvis but not the sinus fat, as real references draw the kidney (a C open at the hilum):
    the last part only unlabels the sinus's fat and paints nothing. sinus_labelled leaves that part
    out (Mix.kidney_sinus)."""
    box = frame.box(np.negative(KIDNEY_RADII), KIDNEY_RADII, 5.0)
    inside = dict(within=KIDNEY, resolution=(1.5, 1.5, 1.5))
    sinus = partial(_renal_sinus_field, frame=frame)
    parts = [Part(partial(_kidney_field, frame=frame), box, ((0.0, "kidney cortex"),), label=KIDNEY,
                  resolution=(1.5, 1.5, 1.5)),
             Part(partial(_medulla_field, frame=frame, offset=rng.uniform(0, 2 * np.pi)), box,
                  ((0.0, "kidney medulla"),), **inside),
             Part(sinus, box, ((0.0, "fat"),), **inside),
             Part(partial(_renal_pelvis_field, frame=frame), box, ((0.0, "urine"),), **inside)]
    return parts if sinus_labelled else parts + [Part(sinus, box, (), label=0, into=("fat",), **inside)]


def _kidney_hilum(frame: Frame) -> np.ndarray:
    """World point (mm) of a kidney's hilum."""
    return frame.to_world([[0.75 * KIDNEY_RADII[0], 0.0, 0.0]])[0]


def _gallbladder_field(axes: Axes, frame: Frame, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The gallbladder (mm): an ellipsoid in the liver's frame, long axis tilted forward."""
    q = _rotated(axes, frame.to_world([centre])[0], frame.rotation @ _rotation((np.radians(-40.0), 0.0, 0.0)))
    return _ellipsoid(q, (0.0, 0.0, 0.0), radii)


def _liver_field(axes: Axes, frame: Frame, body: Body, diaphragm: Diaphragm, spine: Spine, kidney: Frame,
                 gallbladder: Field | None, lobes: Sequence[tuple] = LIVER_LOBES) -> np.ndarray:
    """The liver (mm): its lobes (LIVER_LOBES' form) smoothly joined, inside the body wall, under the
    diaphragm, off the spine, with the impressions of the right kidney and the gallbladder."""
    q = _local(axes, frame)
    f = None
    for centre, radii, taper in lobes:
        lobe = _ellipsoid(q, centre, radii, taper)
        f = lobe if f is None else _smin(f, lobe, 12.0)
    x, y, z = _open(axes)
    f = _smax(f, _cavity_field(axes, body) + 1.0, 4.0)
    f = np.maximum(f, z - _diaphragm_z(diaphragm, x, y))
    f = _smax(f, -_spine_zone(axes, spine), 3.0)
    f = _smax(f, 3.0 - _kidney_field(axes, kidney), 3.0)
    if gallbladder is not None:
        f = np.maximum(f, 1.5 - gallbladder(axes))
    return f + _lobulation(axes, frame)


@dataclass(frozen=True)
class Fissures:
    """One liver's fissures (UMBILICAL_FISSURE, VENOSUM_FISSURE, PORTA_FAT) in its frame (mm): the
    umbilical sheet's point, unit normal, back edge (y) and top (z); the venosum sheet's y, or None;
    the porta's fat half-axes, or None; the sheets' widths, and the field waving them."""

    umbilical: tuple[np.ndarray, np.ndarray, float, float]
    venosum_y: float | None
    porta_radii: np.ndarray | None
    widths: tuple[float, float]
    wave: SmoothField


def _draw_fissures(rng: np.random.Generator, liver: Frame) -> Fissures:
    """Random fissures for this liver (see UMBILICAL_FISSURE)."""
    u = UMBILICAL_FISSURE
    angle = np.radians(rng.uniform(-u["angle_deg"], u["angle_deg"]))
    umbilical = (np.array([rng.uniform(*u["x"]), 0.0, 0.0]), np.array([np.cos(angle), np.sin(angle), 0.0]),
                 float(rng.uniform(*u["y"])), float(rng.uniform(*u["z"])))
    venosum_y = float(rng.uniform(*VENOSUM_FISSURE[1]["y"])) if rng.random() < VENOSUM_FISSURE[0] else None
    porta = np.array([rng.uniform(*r) for r in PORTA_FAT[2]]) if rng.random() < PORTA_FAT[0] else None
    widths = (float(rng.uniform(*FISSURE_WIDTH_MM)), float(rng.uniform(*FISSURE_WIDTH_MM)))
    lo, hi = liver.centre - LIVER_REACH_MM, liver.centre + LIVER_REACH_MM
    return Fissures(umbilical, venosum_y, porta, widths, draw_field(rng, lo, hi, 30.0))


def _fissure_field(axes: Axes, frame: Frame, fissures: Fissures) -> np.ndarray:
    """The liver's fissures (mm, negative inside): the union of its sheets and the porta's fat."""
    q = _local(axes, frame)
    wave = FISSURE_WAVE_MM * field_on(fissures.wave, axes)
    point, normal, back, top = fissures.umbilical
    along = sum((qi - pi) * ni for qi, pi, ni in zip(q, point, normal)) + wave
    f = np.maximum(np.maximum(np.abs(along) - fissures.widths[0] / 2, back - q[1]), q[2] - top)
    if fissures.venosum_y is not None:
        v = VENOSUM_FISSURE[1]
        sheet = np.abs(q[1] - fissures.venosum_y + 0.3 * (q[0] - v["x"][1]) + wave) - fissures.widths[1] / 2
        span = np.maximum(np.abs(q[0] - np.mean(v["x"])) - np.ptp(v["x"]) / 2,
                          np.abs(q[2] - np.mean(v["z"])) - np.ptp(v["z"]) / 2)
        f = np.minimum(f, np.maximum(sheet, span))
    if fissures.porta_radii is not None:
        f = np.minimum(f, _ellipsoid(q, PORTA_FAT[1], fissures.porta_radii) + wave)
    return f


def _spleen_field(axes: Axes, frame: Frame, body: Body, diaphragm: Diaphragm, spine: Spine,
                  hollow: float) -> np.ndarray:
    """The spleen (mm): a crescent, its concave hilum facing the body's centre, against the wall; the
    hilum's hollow moved out by `hollow` times its thickness (shallower: a bulkier spleen)."""
    q = _local(axes, frame)
    t, w, length = SPLEEN_RADII
    f = _smax(_ellipsoid(q, (0.0, 0.0, 0.0), SPLEEN_RADII),
              -_ellipsoid(q, (-(1.4 + hollow) * t, 0.0, 0.0), (1.1 * t, 0.85 * w, 0.8 * length)), 6.0)
    x, y, z = _open(axes)
    f = _smax(f, _cavity_field(axes, body) + 1.0, 4.0)
    f = np.maximum(f, z - _diaphragm_z(diaphragm, x, y))
    return _smax(f, -_spine_zone(axes, spine), 3.0) + _lobulation(axes, frame)


def _spleen_frame(rng: np.random.Generator, breath: float) -> Frame:
    """The spleen's pose: posterolateral on the left, long axis along the ribs (lower pole forward)."""
    outward = (-np.cos(np.radians(24.0)), -np.sin(np.radians(24.0)), 0.0)
    centre = np.asarray(SPLEEN_CENTRE) + (0.0, 0.0, 0.7 * breath)
    frame = _draw_frame(rng, centre, _basis_from(outward, (0.1, -0.5, 1.0)), 110.0, size_sd=0.08,
                        lobe_step=14.0, lobes_mm=3.0)
    if rng.random() < SPLENOMEGALY[0]:
        return replace(frame, size=frame.size * SPLENOMEGALY[1])
    return frame


def _grow_spleen(rng: np.random.Generator, spleen: Frame, left_kidney: Frame) -> tuple[Frame, float, Frame]:
    """A large spleen (LARGE_SPLEEN_*): the spleen's frame grown, its hilum's hollow (as
    _spleen_field takes it) and the left kidney's frame pushed down below it."""
    grown = replace(spleen, size=spleen.size * rng.uniform(*LARGE_SPLEEN_SIZE))
    kidney = left_kidney.moved((0.0, 0.0, -rng.uniform(*LARGE_SPLEEN_KIDNEY_DROP_MM)))
    return grown, float(rng.uniform(*LARGE_SPLEEN_HOLLOW)), kidney


def _pancreas(rng: np.random.Generator, breath: float, thickness: float = 1.0,
              head: float = 1.0) -> tuple[Tube, SmoothField, float]:
    """The pancreas's centre line and thickness (a tube of elliptic cross-section, taller than
    thick), its lobulation field and amplitude (mm); its thickness and lobulation scaled by
    `thickness` (an atrophic gland), its head `head` times as long (SHORT_PANCREAS_HEAD; 1: a
    full head). The random draws are the same whatever the two factors."""
    points = np.asarray(PANCREAS_POINTS) + rng.normal(0.0, 4.0, (len(PANCREAS_POINTS), 3))
    neck = points[PANCREAS_NECK_POINT].copy()
    points = neck + (points - neck) * rng.uniform(0.9, 1.1)
    points += rng.normal(0.0, 6.0, 3) + (0.0, 0.0, 0.5 * breath)
    radii = np.asarray(PANCREAS_RADII) * rng.uniform(0.85, 1.15) * rng.uniform(0.9, 1.1, len(PANCREAS_RADII))
    stretch = (1.0, 1.0, rng.uniform(*PANCREAS_HEIGHT))
    full = spline_tube(points, thickness * radii, step=3.0, stretch=stretch)
    lo, hi = _tube_box([full], 10.0)  # the short head lies inside the full one's box
    lobes, amplitude = draw_field(rng, lo, hi, 5.0), thickness * rng.uniform(1.5, 2.5)
    if head == 1.0:
        return full, lobes, amplitude
    head_points = slice(0, PANCREAS_NECK_POINT)
    neck = points[PANCREAS_NECK_POINT]
    points[head_points] = neck + (points[head_points] - neck) * head
    radii[head_points] *= (1.0 + head) / 2.0
    return spline_tube(points, thickness * radii, step=3.0, stretch=stretch), lobes, amplitude


def _body_and_tail(pancreas: Tube) -> Tube:
    """The pancreas's centre line from its neck (PANCREAS_NECK_X) to the tail."""
    start = int(np.argmin(np.abs(pancreas.points[:, 0] - PANCREAS_NECK_X)))
    return Tube(pancreas.points[start:], pancreas.radii[start:], pancreas.stretch)


def _spleen_hilum(spleen: Frame, hollow: float, along: float) -> np.ndarray:
    """A point (mm) of the splenic hilum, in the hollow of a spleen drawn with `hollow`
    (_spleen_field), `along` times the spleen's half-length above its centre."""
    return spleen.to_world([[-(0.9 + hollow) * SPLEEN_RADII[0], 0.0, along * SPLEEN_RADII[2]]])[0]


def _splenic_vein(pancreas: Tube, confluence: np.ndarray, spleen: Frame, hollow: float) -> Tube:
    """The splenic vein: from the splenic hilum along the back of the pancreas to the confluence."""
    p = pancreas.points
    tangent = np.gradient(p[:, :2], axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal *= np.sign(-normal[:, 1:2] + 1e-9) / np.linalg.norm(normal, axis=1, keepdims=True)  # posterior
    behind = p.copy()
    behind[:, :2] += normal * (pancreas.radii[:, None] + 4.0)
    start = int(np.argmin(np.abs(p[:, 0] - confluence[0])))
    hilum = _spleen_hilum(spleen, hollow, -0.2)
    path = np.concatenate([[confluence], behind[start + 2::4], [hilum]])
    return spline_tube(path, np.linspace(5.0, 4.0, len(path)), step=4.0)


# ------------------------------------------------------------------------------------ vessels

def _aorta(spine: Spine, rng: np.random.Generator) -> tuple[Tube, list[Tube], np.ndarray]:
    """Aorta (descending thoracic, then anterior-left of the spine down to the bifurcation), the
    common and external iliac arteries, and the spine's front line y(z) used by the other vessels."""
    p = spine.pitch
    z = np.array([320.0, 220.0, 150.0, 90.0, 40.0, -10.0, -60.0]) + spine.z0
    z = np.append(z, spine.z0 - 3.0 * p)
    front = _spine_y(spine, z) + _vertebra_size(spine, z)[1]
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
        hilum = _kidney_hilum(frame)
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
    spleen_hilum = _spleen_hilum(spleen, hollow, 0.1)
    wiggle = np.linspace(celiac, spleen_hilum, 12) + (0.0, 0.0, 10.0)
    wiggle[1:-1, 1] += 8.0 * np.sin(np.linspace(0, 5 * np.pi, 12))[1:-1]
    splenic = spline_tube(np.concatenate([[celiac], [celiac + (0, 14, 2)], wiggle[1:]]), [3.5] + [2.8] * 12)
    return sma, smv, splenic


def _vessel_parts(rng: np.random.Generator, spine: Spine, liver: Frame, spleen: Frame, kidneys: list[Frame],
                  pancreas: Tube, spleen_hollow: float) -> list[Part]:
    """Aorta and branches, IVC and tributaries, portal system, hepatic veins (labels cleared, except
    inside the liver, whose label the intrahepatic vessels keep); the splenic vessels end in the
    hilum of a spleen drawn with spleen_hollow (_spleen_field)."""
    aorta, iliac_arteries, spine_front = _aorta(spine, rng)
    ivc, iliac_veins = _ivc(spine_front, spine, liver, rng)
    neck = _body_and_tail(pancreas).points[0]
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
            tube_part(renal_veins, vein), tube_part(renal_arteries, artery),
            tube_part([portal, smv, _splenic_vein(pancreas, confluence, spleen, spleen_hollow)], portal_vein, label=0),
            tube_part(intrahepatic[:len(PORTAL_BRANCHES)], portal_vein, within=LIVER),
            tube_part(intrahepatic[len(PORTAL_BRANCHES):], vein, within=LIVER)]


# ------------------------------------------------------------------------------------ lesions

def _lesion_field(axes: Axes, centre: np.ndarray, radii: np.ndarray, lobes: SmoothField,
                  amplitude: float) -> np.ndarray:
    """A lesion (mm): an ellipsoid with an irregular outline."""
    q = tuple(g - c for g, c in zip(_open(axes), centre))
    return _ellipsoid(q, (0.0, 0.0, 0.0), radii) + amplitude * field_on(lobes, axes)


def _lesion_part(rng: np.random.Generator, centre: np.ndarray, organ: int) -> Part:
    """A cyst or hypodense tumour (5-40 mm across) at centre (mm), painted only inside the organ."""
    r = np.exp(rng.uniform(*np.log(LESION_RADIUS_MM)))
    radii = r * rng.uniform(0.8, 1.2, 3)
    cyst = rng.random() < LESIONS[3]
    amplitude = 0.05 * r if cyst else 0.15 * r
    reach = radii.max() + amplitude + 2.0
    lobes = draw_field(rng, centre - reach, centre + reach, max(r / 2, 2.0))
    return Part(partial(_lesion_field, centre=centre, radii=radii, lobes=lobes, amplitude=amplitude),
                _box(centre, reach), ((0.0, "cyst" if cyst else "tumour"),), resolution=(1.0, 1.0, 1.0),
                within=organ, lesion=True)


def _lesion_parts(rng: np.random.Generator, liver: Frame, kidneys: list[Frame]) -> list[Part]:
    """Lesions of the cases that have them: in the liver, sometimes a kidney."""
    if rng.random() >= LESIONS[0]:
        return []
    parts = []
    for _ in range(1 + min(rng.poisson(LESIONS[1]), 4)):
        centre, radii, _ = LIVER_LOBES[0] if rng.random() < 0.75 else LIVER_LOBES[2]
        local = np.asarray(centre) + rng.uniform(-0.45, 0.45, 3) * np.asarray(radii)
        parts.append(_lesion_part(rng, liver.to_world([local])[0], LIVER))
    if rng.random() < LESIONS[2]:
        frame = kidneys[rng.integers(2)]
        local = rng.uniform(-0.6, 0.6, 3) * np.asarray(KIDNEY_RADII) * (0.6, 1.0, 1.0)
        parts.append(_lesion_part(rng, frame.to_world([local])[0], KIDNEY))
    return parts


# ------------------------------------------------------------------------------------ gut

def _gas_field(axes: Axes, field: SmoothField, threshold: float, level: float, gravity_mm: float) -> np.ndarray:
    """Where gas collects in the gut (negative): a smooth random field above a threshold, more
    towards the front (y above level; the patient lies on the back)."""
    y = _open(axes)[1]
    return threshold - field_on(field, axes) - (y - level) / gravity_mm


def _bowel_field(axes: Axes, a: SmoothField, b: SmoothField, length: float, radius: float,
                 top: float) -> np.ndarray:
    """Small-bowel loops (mm): _curve_tubes_field below z = top - x / 4."""
    x, _, z = _open(axes)
    return np.maximum(_curve_tubes_field(axes, a, b, length, radius), z - (top - x / 4.0))


def _gut_parts(rng: np.random.Generator, body: Body) -> list[Part]:
    """Oesophagus, stomach (air-fluid level), duodenum, colon (haustra, faeces, gas) and small bowel,
    each only in the fat left over by the organs."""
    wall = ((0.0, "gut wall"), (GUT_WALL_MM, "gastric content"))
    points = np.array([p for p, _ in GUT_TUBE]) + rng.normal(0.0, 4.0, (len(GUT_TUBE), 3))
    radii = np.array([r for _, r in GUT_TUBE])
    radii[STOMACH_POINTS] *= rng.uniform(0.7, 1.25)
    stomach = spline_tube(points, radii, step=4.0)
    stomach_box = _tube_box([stomach])
    level = rng.uniform(20.0, 75.0)
    parts = [tube_part([stomach], wall, into=GUT_SPACE),
             Part(partial(_level_field, level=level), stomach_box, ((0.0, "gas"),), resolution=(50.0, 0.5, 50.0),
                  into=("gastric content",))]

    cpoints = np.array([p for p, _ in COLON]) + rng.normal(0.0, 5.0, (len(COLON), 3))
    colon = spline_tube(cpoints, [r for _, r in COLON], step=3.0)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(colon.points, axis=0), axis=1))])
    haustra = 1.0 + 0.12 * np.cos(2 * np.pi * arc / rng.uniform(22.0, 32.0))
    colon = Tube(colon.points, colon.radii * haustra * rng.uniform(0.8, 1.15))
    colon_box = _tube_box([colon])
    colon_gas = draw_field(rng, *colon_box, 18.0)
    parts += [tube_part([colon], ((0.0, "gut wall"), (GUT_WALL_MM, "faeces")), into=GUT_SPACE),
              Part(partial(_gas_field, field=colon_gas, threshold=rng.uniform(-0.3, 0.8), level=30.0,
                           gravity_mm=60.0), colon_box, ((0.0, "gas"),), into=("faeces",))]

    lo = (-body.a, min(RETROPERITONEUM[1]) - 40.0 - 0.3 * body.b, -420.0)
    hi = (body.a, body.yc + body.b, 60.0)
    step = rng.uniform(10.0, 13.0)
    loops = partial(_bowel_field, **_curve_tubes(rng, lo, hi, step), radius=rng.uniform(9.0, 13.0),
                    top=rng.uniform(0.0, 25.0))
    bowel_gas = draw_field(rng, lo, hi, 15.0)
    parts += [Part(loops, (lo, hi), ((0.0, "gut wall"), (GUT_WALL_MM, "bowel fluid")), into=("visceral fat",)),
              Part(partial(_gas_field, field=bowel_gas, threshold=rng.uniform(0.8, 1.8), level=40.0,
                           gravity_mm=80.0), (lo, hi), ((0.0, "gas"),), into=("bowel fluid",))]
    return parts


def _level_field(axes: Axes, level: float) -> np.ndarray:
    """An air-fluid level (mm): negative in front of y = level (the patient lies on the back)."""
    return level - _open(axes)[1]


# ------------------------------------------------------------------------------------ the whole patient

def draw_anatomy(rng: np.random.Generator, pancreas_thickness: float = 1.0, fat_plane_mm: float = 0.0,
                 pelvic_organs: np.random.Generator | None = None, sinus_labelled: bool = False,
                 pancreas_head: float = 1.0, fissures: np.random.Generator | None = None,
                 arms: Arms | None = None, tongue: np.random.Generator | None = None,
                 spleen_growth: np.random.Generator | None = None) -> list[Part]:
    """One patient's anatomy as parts in painting order (depends only on the random stream), the
    pancreas's thickness scaled by pancreas_thickness (ATROPHIC_PANCREAS) and its head's length by
    pancreas_head (SHORT_PANCREAS_HEAD), where fat_plane_mm > 0, fat that thick around its body
    and tail that no gut enters (PANCREAS_FAT_PLANE_MM), with a stream for them, the pelvic
    organs, hip muscles and hips (_pelvic_organ_parts), and the renal sinus fat labelled kidney
    where sinus_labelled (_kidney_parts), and with a stream for them, the liver's fissures (_draw_fissures)
    and a long left lobe (LEFT_LOBE_TONGUE), and a large spleen with the left kidney below it
    (_grow_spleen); arms, if given, beside the trunk (_arm_parts)."""
    body, spine = _draw_body(rng), _draw_spine(rng)
    if pelvic_organs is not None:
        body = replace(body, hip_z=_mean_crest(spine),
                       hip_gain=float(pelvic_organs.uniform(*HIP_GAIN)))
    diaphragm = _draw_diaphragm(rng, spine)
    breath = diaphragm.right[2] - DOME_MM
    parts = _table_part(rng, body) + _body_parts(body, diaphragm) + _chest_parts(rng, body, diaphragm)
    parts += _muscle_parts(rng, spine, body) + _spine_parts(spine) + _rib_parts(_rib_tubes(body, spine, rng))
    pelvis = _draw_pelvis(rng, spine)
    parts += _pelvis_parts(pelvis, body)
    if pelvic_organs is not None:
        parts += _pelvic_organ_parts(pelvic_organs, body, spine, pelvis)

    kidneys = [_kidney_frame(rng, side, breath) for side in (1.0, -1.0)]
    liver = _draw_frame(rng, np.asarray(LIVER_CENTRE) + (0.0, 0.0, breath), np.eye(3), LIVER_REACH_MM, angle_deg=6.0,
                        warp_mm=7.0, lobe_step=25.0, lobes_mm=3.0)
    gallbladder = None
    if rng.random() < GALLBLADDER[0]:
        gb_radii = np.asarray(GALLBLADDER[2]) * rng.uniform(0.7, 1.2)
        gallbladder = partial(_gallbladder_field, frame=liver, centre=GALLBLADDER[1], radii=gb_radii)
    spleen, hollow = _spleen_frame(rng, breath), 0.0
    pancreas, lobes, amplitude = _pancreas(rng, breath, pancreas_thickness, pancreas_head)
    if spleen_growth is not None:
        spleen, hollow, kidneys[1] = _grow_spleen(spleen_growth, spleen, kidneys[1])

    liver_lobes = LIVER_LOBES
    if tongue is not None:
        liver_lobes += ((tuple(tongue.uniform(*r) for r in LEFT_LOBE_TONGUE[0]),
                         tuple(tongue.uniform(*r) for r in LEFT_LOBE_TONGUE[1]), 0.0),)
    parts.append(Part(partial(_liver_field, frame=liver, body=body, diaphragm=diaphragm, spine=spine, kidney=kidneys[0],
                              gallbladder=gallbladder, lobes=liver_lobes), _lobes_box(liver, liver_lobes), ((0.0, "liver"),),
                      label=LIVER, resolution=(3.0, 3.0, 3.0)))
    if fissures is not None:
        parts.append(Part(partial(_fissure_field, frame=liver, fissures=_draw_fissures(fissures, liver)),
                          _lobes_box(liver, liver_lobes), ((0.0, "fat"),), label=0, within=LIVER,
                          resolution=(1.0, 1.0, 1.0)))
    if gallbladder is not None:
        gb_centre = liver.to_world([GALLBLADDER[1]])[0]
        parts.append(Part(gallbladder, _box(gb_centre, 60.0), ((0.0, "gut wall"), (2.0, "bile")), label=0,
                          resolution=(1.5, 1.5, 1.5)))
    parts.append(Part(partial(_spleen_field, frame=spleen, body=body, diaphragm=diaphragm, spine=spine, hollow=hollow),
                      spleen.box(np.negative(SPLEEN_RADII), SPLEEN_RADII, 5.0), ((0.0, "spleen"),), label=SPLEEN,
                      resolution=(3.0, 3.0, 3.0)))
    for frame in kidneys:
        parts += _kidney_parts(rng, frame, sinus_labelled)
    parts.append(Part(partial(_lobulated_tube_field, tube=pancreas, lobes=lobes, amplitude=amplitude),
                      _tube_box([pancreas], 2 * amplitude), ((0.0, "pancreas"),), label=PANCREAS,
                      resolution=(0.0, 0.0, 0.0)))
    if fat_plane_mm > 0.0:
        body_and_tail = _body_and_tail(pancreas)
        parts.append(Part(partial(_lobulated_tube_field, tube=body_and_tail, lobes=lobes, amplitude=amplitude,
                                  grow=fat_plane_mm), _tube_box([body_and_tail], 2 * amplitude + fat_plane_mm),
                          ((0.0, "fat"),), into=GUT_SPACE, resolution=(0.0, 0.0, 0.0)))
    parts += _vessel_parts(rng, spine, liver, spleen, kidneys, pancreas, hollow)
    parts += _lesion_parts(rng, liver, kidneys)
    parts += _gut_parts(rng, body)
    parts += _upper_chest_parts(rng, body, spine)
    if arms is not None:
        parts += _arm_parts(arms, body)
    return parts


# ------------------------------------------------------------------------------------ scan geometry

def capped(geometry: Geometry, max_side: int | None) -> Geometry:
    """The same field of view with at most max_side voxels along each axis (spacing scaled up)."""
    if max_side is None:
        return geometry
    shape = tuple(min(n, max_side) for n in geometry.shape)
    spacing = tuple(s * n / m for s, n, m in zip(geometry.spacing, geometry.shape, shape))
    origin = tuple(o + (t - s) / 2 for o, s, t in zip(geometry.origin, geometry.spacing, spacing))
    return Geometry(shape, spacing, origin)


def centred(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Geometry:
    """A grid of the given shape (x, y, z) and spacing (mm) centred on the abdomen (ABDOMEN_CENTRE_MM):
    for tests and benchmarks that need a fixed size."""
    origin = tuple(c - (n - 1) * s / 2 for c, n, s in zip(ABDOMEN_CENTRE_MM, shape, spacing))
    return Geometry(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), origin)


def draw_geometry(rng: np.random.Generator, max_side: int | None = None, scan: str | None = None
                  ) -> tuple[Geometry, str]:
    """A scan's grid and the name of its range: MATRIX x MATRIX pixels of 0.6-1.0 mm, slices of
    0.8-5 mm covering 150-450 mm (at most MAX_SLICES) from the lung bases (most), the upper abdomen
    or below the liver dome down, or the EXTRA_RANGES entry `scan`; then capped to max_side voxels
    per axis, keeping the field of view. A scan of EXTRA_RANGES takes the same draws from rng, so
    the rest of the grid is the one the case has without it."""
    inplane = rng.uniform(*INPLANE_SPACING_MM)
    slice_mm = float(rng.choice(SLICE_SPACINGS_MM, p=SLICE_SPACING_P))
    names = list(SCAN_RANGES)
    drawn = names[rng.choice(len(names), p=[SCAN_RANGES[n][0] for n in names])]
    top, coverage = EXTRA_RANGES[scan] if scan is not None else SCAN_RANGES[drawn][1:]
    top_z = DOME_MM + rng.uniform(*top)
    slices = max(1, min(MAX_SLICES, int(round(rng.uniform(*coverage) / slice_mm))))
    centre = (rng.normal(*FOV_CENTRE_MM[0]), rng.uniform(*FOV_CENTRE_MM[1]))
    half = (MATRIX - 1) / 2 * inplane
    origin = (centre[0] - half, centre[1] - half, top_z - (slices - 1) * slice_mm)
    geometry = Geometry((MATRIX, MATRIX, slices), (inplane, inplane, slice_mm), origin)
    return capped(geometry, max_side), scan or drawn


# ------------------------------------------------------------------------------------ CT values

def draw_organ_enhancement(rng: np.random.Generator) -> tuple[float, dict[str, float]]:
    """The common factor on the organs' enhancement (ORGAN_ENHANCEMENT) and each enhancing
    tissue's factor (that times its organ's ORGAN_ENHANCEMENT_SPREAD draw), keyed by tissue name."""
    common = float(rng.uniform(*ORGAN_ENHANCEMENT))
    factors = {}
    for tissues in ENHANCING_ORGANS.values():
        own = common * float(rng.uniform(*ORGAN_ENHANCEMENT_SPREAD))
        factors.update((name, own) for name in tissues)
    return common, factors


def _tissue_values(rng: np.random.Generator, phase: str, organ_factors: Mapping[str, float] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tissue code: this case's mean HU (its prior for the phase, the enhancement scaled by the
    case's bolus or, for the tissues organ_factors names, by their factor; plus its sd) and its fine
    and coarse texture amplitudes (HU). rng's draws do not depend on organ_factors."""
    k = PHASES.index(phase)
    means = np.array([p[0] for p in HU_PRIORS.values()])
    sd, fine, coarse = (np.array([p[i] for p in HU_PRIORS.values()]) for i in (1, 2, 3))
    bolus = np.full(len(HU_PRIORS), rng.uniform(*BOLUS))
    for name, factor in (organ_factors or {}).items():
        bolus[TISSUE[name]] = factor
    mean = means[:, 0] + bolus * (means[:, k] - means[:, 0]) + rng.normal(0.0, sd)
    if rng.random() < ORAL_CONTRAST[0]:
        mean[TISSUE["bowel fluid"]] = rng.uniform(*ORAL_CONTRAST[1])
    mean[TISSUE["tumour"]] = min(mean[TISSUE["tumour"]], mean[TISSUE["liver"]] - LESION_DARKER_HU)
    if phase == "arterial":
        for name, amplitude in ARTERIAL_MOTTLE_HU.items():
            coarse[TISSUE[name]] += amplitude
    return mean.astype(np.float32), fine.astype(np.float32), coarse.astype(np.float32)


def _texture(rng: np.random.Generator, geometry: Geometry, step: float) -> np.ndarray:
    """A smooth random field of unit variance (features about step mm) on the geometry's grid."""
    axes = geometry.axes()
    return field_on(draw_field(rng, [a[0] for a in axes], [a[-1] for a in axes], step), axes)


def _blur(image: np.ndarray, spacing: Sequence[float], sigma_mm: Sequence[float]) -> np.ndarray:
    """Gaussian blur of sigma mm along x, y, z (axes whose sigma is under 0.2 voxel are left alone)."""
    sigma = [s / d if s / d >= 0.2 else 0.0 for s, d in zip(sigma_mm, spacing)]
    return ndimage.gaussian_filter(image, sigma, truncate=3.0) if any(sigma) else image


def _noise(rng: np.random.Generator, shape: tuple[int, ...], spacing: Sequence[float], sd: float,
           grain_mm: float) -> np.ndarray:
    """Gaussian noise of sd HU, correlated in-plane over grain_mm (Gaussian sigma), float32."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    sigma = grain_mm / spacing[0]
    if sigma >= 0.2:
        noise = ndimage.gaussian_filter(noise, (sigma, sigma, 0.0), truncate=3.0)
        delta = np.zeros((31, 31), np.float32)
        delta[15, 15] = 1.0
        noise *= 1.0 / np.sqrt((ndimage.gaussian_filter(delta, sigma, truncate=3.0) ** 2).sum())
    noise *= sd
    return noise


def ct_image(tissue: np.ndarray, geometry: Geometry, phase: str, rng: np.random.Generator,
             colon_hu: float | None = None, liver_drop_hu: float = 0.0,
             organ_factors: Mapping[str, float] | None = None, stomach_hu: float | None = None,
             hu_offset: np.ndarray | None = None) -> np.ndarray:
    """A CT (float32 HU, x y z) of the tissue codes in a contrast phase: tissue values and texture,
    gas bubbles in faeces and food, reconstruction and slice blur, correlated noise. With colon_hu
    the faeces are instead a homogeneous fluid of that value (FLUID_COLON_TEXTURE_HU, no bubbles);
    liver_drop_hu lowers the liver (FATTY_LIVER_DROP_HU); organ_factors scale the named tissues'
    enhancement instead of the bolus (draw_organ_enhancement); with stomach_hu the gastric content is
    food of that value (FULL_STOMACH_TEXTURE_HU, no bubbles); hu_offset (HU, the tissue's shape) is
    added before the blur (liver_region_offset); rng's draws are the same either way."""
    mean, fine, coarse = _tissue_values(rng, phase, organ_factors)
    if liver_drop_hu:
        mean[TISSUE["liver"]] -= liver_drop_hu
        mean[TISSUE["tumour"]] = min(mean[TISSUE["tumour"]], mean[TISSUE["liver"]] - LESION_DARKER_HU)
    fills = {"faeces": (colon_hu, FLUID_COLON_TEXTURE_HU), "gastric content": (stomach_hu, FULL_STOMACH_TEXTURE_HU)}
    for name, (hu, texture_hu) in fills.items():  # a value given: that homogeneous fill, without bubbles
        if hu is not None:
            mean[TISSUE[name]], fine[TISSUE[name]] = hu, texture_hu
    mottled = tuple(name for name in MOTTLED if fills[name][0] is None)
    texture = _texture(rng, geometry, FINE_TEXTURE_MM)
    image = mean[tissue]
    image += fine[tissue] * texture
    image[_tissue_mask(mottled)[tissue] & (texture > MOTTLE_THRESHOLD)] = mean[TISSUE["gas"]]
    del texture
    image += coarse[tissue] * _texture(rng, geometry, COARSE_TEXTURE_MM)
    if hu_offset is not None:
        image += hu_offset
    blur = rng.uniform(*BLUR_MM)
    image = _blur(image, geometry.spacing, (blur, blur, rng.uniform(*SLICE_BLUR) * geometry.spacing[2]))
    image += _noise(rng, image.shape, geometry.spacing, rng.uniform(*NOISE_HU), rng.uniform(*NOISE_GRAIN_MM))
    return image


def _field_in_box(mask: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                  step: float) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """The bounding box (voxel slices) of a non-empty mask (x y z) and a smooth random field with
    control points every step mm on the grid inside it."""
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    axes = tuple(a[b] for a, b in zip(geometry.axes(), box))
    return box, field_on(draw_field(rng, [a[0] for a in axes], [a[-1] for a in axes], step), axes)


def fatty_infiltration(tissue: np.ndarray, labels: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                       fraction: float) -> None:
    """Replace `fraction` of the pancreas's parenchyma (tissue codes, x y z) by visceral fat, in
    lobules about FATTY_GRAIN_MM across (where a smooth random field is lowest), in place; the
    labels stay."""
    present = labels == PANCREAS
    if not present.any():
        return
    box, lobules = _field_in_box(present, geometry, rng, FATTY_GRAIN_MM)
    block = tissue[box]  # a view: painted in place
    gland = present[box] & (block == TISSUE["pancreas"])
    if gland.any():
        block[gland & (lobules < np.quantile(lobules[gland], fraction))] = TISSUE["visceral fat"]


def liver_region_offset(tissue: np.ndarray, geometry: Geometry, rng: np.random.Generator, drop_hu: float,
                        share: float) -> np.ndarray:
    """HU to add to a CT of the tissue codes (x y z) for a darker region of the liver: -drop_hu over
    `share` of the liver's parenchyma where a smooth random field (LIVER_REGION_STEP_MM) is lowest,
    fading to 0 over the field's next LIVER_REGION_FADE sd; 0 elsewhere (vessels and lesions too)."""
    offset = np.zeros(tissue.shape, np.float32)
    liver = tissue == TISSUE["liver"]
    if not liver.any():
        return offset
    box, field = _field_in_box(liver, geometry, rng, LIVER_REGION_STEP_MM)
    inside = liver[box]
    values = field[inside]
    threshold = np.quantile(values, share)
    fade = LIVER_REGION_FADE * float(values.std()) + 1e-6
    weight = np.clip((threshold + fade - field) / fade, 0.0, 1.0)
    offset[box] = np.where(inside, -drop_hu * weight, 0.0)
    return offset


def _clip_tubes(tissue: np.ndarray, labels: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> list[Tube]:
    """Surgical clips (short thin rods, mm) scattered around a point of the gallbladder, or of the
    liver's lowest third where no gallbladder shows; none where neither does."""
    site = np.argwhere(tissue == TISSUE["bile"])
    if not len(site):
        liver = np.argwhere(labels == LIVER)
        site = liver[liver[:, 2] <= np.quantile(liver[:, 2], 1 / 3)] if len(liver) else liver
    if not len(site):
        return []
    axes = geometry.axes()
    centre = np.array([a[i] for a, i in zip(axes, site[rng.integers(len(site))])], float)
    tubes = []
    for _ in range(rng.integers(CLIP_COUNT[0], CLIP_COUNT[1] + 1)):
        middle = centre + rng.uniform(-CLIP_SPREAD_MM, CLIP_SPREAD_MM, 3)
        half = rng.uniform(*CLIP_LENGTH_MM) / 2 * _unit(rng.standard_normal(3))
        tubes.append(spline_tube([middle - half, middle + half], [rng.uniform(*CLIP_RADIUS_MM)] * 2))
    return tubes


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _vertebral_body(tissue: np.ndarray, axes: Axes, k: int) -> tuple[float, float, float] | None:
    """In axial slice k: the centre (x, y mm) of the vertebral body (the cancellous bone near the
    midline in front of the spinal canal) and the canal's centre y (mm); None where either is missing."""
    near = np.abs(axes[0]) < 30.0
    canal = np.argwhere(tissue[near, :, k] == TISSUE["csf"])
    if not len(canal):
        return None
    canal_y = float(axes[1][canal[:, 1]].mean())
    body = np.argwhere(tissue[near, :, k] == TISSUE["cancellous bone"])
    body = body[axes[1][body[:, 1]] > canal_y + 5.0]
    if len(body) < 10:
        return None
    return float(axes[0][near][body[:, 0]].mean()), float(axes[1][body[:, 1]].mean()), canal_y


def _screw_tubes(tissue: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> list[Tube]:
    """Pedicle screws (mm) into 1-3 vertebral bodies LEVEL_STEP_MM apart, two per level from behind
    the canal's sides forwards and inwards, joined by a rod on each side; none where the scan
    shows no vertebral body."""
    axes = geometry.axes()
    z = axes[2]
    bodies = {k: body for k in range(len(z)) if (body := _vertebral_body(tissue, axes, k)) is not None}
    if not bodies:
        return []
    start = z[list(bodies)[rng.integers(len(bodies))]]
    radius = rng.uniform(*SCREW_RADIUS_MM)
    tubes, entries = [], {-1.0: [], 1.0: []}
    for level in start + LEVEL_STEP_MM * np.arange(rng.integers(SCREW_LEVELS[0], SCREW_LEVELS[1] + 1)) * rng.choice((-1.0, 1.0)):
        k = int(np.argmin(np.abs(z - level)))
        centre = bodies.get(k)
        if centre is None:
            continue
        cx, cy, canal_y = centre
        for side in (-1.0, 1.0):
            tip = np.array([cx + side * rng.uniform(3.0, 8.0), cy + rng.uniform(0.0, 8.0), z[k]])
            entry = np.array([cx + side * rng.uniform(20.0, 26.0), canal_y - rng.uniform(6.0, 12.0), z[k]])
            tubes.append(spline_tube([entry, tip], [radius * 1.5, radius]))
            entries[side].append(entry)
    for points in entries.values():
        if len(points) > 1:
            ends = np.array(sorted(points, key=lambda p: p[2]))
            ends[0, 2] -= 10.0
            ends[-1, 2] += 10.0
            tubes.append(spline_tube(ends + (0.0, -4.0, 0.0), [ROD_RADIUS_MM] * len(ends)))
    return tubes


def _streak_profile(rng: np.random.Generator, bins: int) -> np.ndarray:
    """A random pattern over ray angles [0, pi) (bins): smooth over STREAK_WIDTH_DEG, heavy-tailed
    (a few strong streaks among many faint ones), peaks at +-1."""
    sigma = rng.uniform(*STREAK_WIDTH_DEG) * bins / 180.0
    g = ndimage.gaussian_filter1d(rng.standard_normal(bins), sigma, mode="wrap") ** 3
    return (g / max(float(np.abs(g).max()), 1e-9)).astype(np.float32)


@dataclass(frozen=True)
class MetalPiece:
    """A piece of metal in an axial slice: centre (x, y) mm, area mm^2, the ends (x, y) mm of its
    long axis and its half-width (mm) across it."""

    centre: np.ndarray
    area: float
    ends: tuple[np.ndarray, np.ndarray]
    half_width: float

    @classmethod
    def of(cls, points: np.ndarray, pixel_area: float) -> MetalPiece:
        """From the (x, y) positions (mm) of its pixels: the axes from their covariance."""
        centre = points.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov(points.T) if len(points) > 2 else np.eye(2) * 1e-3)
        half = np.sqrt(3.0 * np.maximum(values, 0.0))  # half-extents of a uniform bar
        return cls(centre, len(points) * pixel_area, (centre - half[1] * vectors[:, 1], centre + half[1] * vectors[:, 1]),
                   max(float(half[0]), 0.5))

    def weight(self) -> float:
        """How strongly it streaks: grows with the metal's section, 1 from 20 mm^2 up."""
        return min(1.0, float(np.sqrt(self.area / 20.0)))


def _band(x: np.ndarray, y: np.ndarray, p: np.ndarray, q: np.ndarray, width: float) -> np.ndarray:
    """1 along the segment p-q (mm) on an (x, y) grid (mm), falling off across the line as a
    Gaussian of sd `width` and beyond the ends as STREAK_NEAR_MM / (distance + STREAK_NEAR_MM)."""
    length = float(np.linalg.norm(q - p))
    u = (q - p) / length if length > 1e-6 else np.array([1.0, 0.0])
    dx, dy = x[:, None] - p[0], y[None, :] - p[1]
    along, across = dx * u[0] + dy * u[1], np.abs(dx * u[1] - dy * u[0])
    beyond = np.maximum(np.maximum(-along, along - length), 0.0)
    return (np.exp(-0.5 * (across / width) ** 2) * (STREAK_NEAR_MM / (beyond + STREAK_NEAR_MM))).astype(np.float32)


def _slice_streaks(pieces: list[MetalPiece], x: np.ndarray, y: np.ndarray, amplitude: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Streaks (HU, x y) in one axial slice from the metal pieces in it, on a grid of x and y
    coordinates (mm): along every ray through a piece a random pattern falling off as 1/r, and
    dark bands (beam hardening) along the rays through a piece's length and through two pieces."""
    bins = 720
    out = np.zeros((len(x), len(y)), np.float32)
    for piece in pieces:
        dx, dy = x[:, None] - piece.centre[0], y[None, :] - piece.centre[1]
        angle = ((np.arctan2(dy, dx) % np.pi) * (bins / np.pi)).astype(np.int64) % bins
        falloff = STREAK_NEAR_MM / (np.hypot(dx, dy) + STREAK_NEAR_MM)
        out += amplitude * piece.weight() * _streak_profile(rng, bins)[angle] * falloff
        if np.linalg.norm(piece.ends[1] - piece.ends[0]) > 4 * piece.half_width:  # elongated
            out -= rng.uniform(*BEAM_HARDENING_HU) * amplitude * piece.weight() * _band(x, y, *piece.ends, piece.half_width)
    for i, a in enumerate(pieces):
        for b in pieces[i + 1:]:
            weight = min(a.weight(), b.weight())
            width = min(a.half_width, b.half_width)
            out -= rng.uniform(*BEAM_HARDENING_HU) * amplitude * weight * _band(x, y, a.centre, b.centre, width)
    return np.clip(out, -STREAK_LIMIT_HU, STREAK_LIMIT_HU)


def _at_least_a_voxel(tube: Tube, spacing: Sequence[float]) -> Tube:
    """The tube thickened to half a voxel where it is thinner (a thin clip on a coarse grid shows
    as a bright voxel, not as nothing): radius at least half the in-plane spacing, its reach
    along z at least half the slice spacing."""
    radii = np.maximum(tube.radii, 0.5 * max(spacing[:2]))
    return Tube(tube.points, radii, (1.0, 1.0, max(1.0, 0.5 * spacing[2] / float(radii.min()))))


def metal_implants(image: np.ndarray, tissue: np.ndarray, labels: np.ndarray, geometry: Geometry,
                   rng: np.random.Generator, kind: str) -> bool:
    """Add metal of a kind (METAL_KINDS) and its streaks to the image (float32 HU, x y z), in place:
    the metal only in the body outside the organ labels, the streaks only in the body, slice by
    slice; the labels stay. False (the image untouched) where the scan shows no site for it."""
    tubes = (_clip_tubes(tissue, labels, geometry, rng) if kind == "clips" else _screw_tubes(tissue, geometry, rng))
    if not tubes:
        return False
    axes = geometry.axes()
    metal = (_tube_field(axes, [_at_least_a_voxel(t, geometry.spacing) for t in tubes]) <= 0)
    metal &= (labels == 0) & (tissue != TISSUE["air"])
    if not metal.any():
        return False
    x, y, _ = axes
    amplitude = rng.uniform(*STREAK_HU[kind])
    pixel = geometry.spacing[0] * geometry.spacing[1]
    body = tissue != TISSUE["air"]
    for k in np.nonzero(metal.any(axis=(0, 1)))[0]:
        parts, n = ndimage.label(metal[:, :, k], structure=np.ones((3, 3)))
        pieces = [MetalPiece.of(np.stack([x[i], y[j]], axis=1), pixel)
                  for i, j in (np.nonzero(parts == m) for m in range(1, n + 1))]
        image[:, :, k] += _slice_streaks(pieces, x, y, amplitude, rng) * body[:, :, k]
    box = tuple(slice(max(int(i.min()) - 3, 0), int(i.max()) + 4) for i in np.nonzero(metal))
    share = np.minimum(1.0, 2.0 * ndimage.gaussian_filter(metal[box].astype(np.float32), [0.5 / s for s in geometry.spacing]))
    image[box] += share * (METAL_HU - image[box])  # the metal, with partial volume at its edge
    return True


def arm_shadow(image: np.ndarray, tissue: np.ndarray, geometry: Geometry, arms: Arms,
               rng: np.random.Generator) -> None:
    """The rays through both arms in each axial slice (photon starvation, beam hardening): the
    image (float32 HU, x y z) made arms.shadow_hu darker, with extra noise of sd arms.shadow_noise
    correlated along the band over arms.shadow_grain mm, in a Gaussian band of sd arms.shadow_width
    mm round the line through both arms' bones; in the body only (tissue not air), in place."""
    x, y, _ = geometry.axes()
    (y_right, y_left) = (arms.y[k] + arms.offset[k][1] for k in range(2))
    slope = (y_right - y_left) / 400.0  # the line through both bones, 200 mm either side of the midline
    across = (y[None, :] - 0.5 * (y_right + y_left) - slope * x[:, None]) / np.hypot(1.0, slope)
    band = np.exp(-0.5 * (across / arms.shadow_width) ** 2).astype(np.float32)
    rows = np.nonzero(band.max(axis=0) > 0.01)[0]
    if not len(rows):
        return
    block = (slice(None), slice(int(rows[0]), int(rows[-1]) + 1))
    sx, sy, _ = geometry.spacing
    shadow = rng.standard_normal((len(x), block[1].stop - block[1].start, image.shape[2]), dtype=np.float32)
    shadow = ndimage.gaussian_filter(shadow, (arms.shadow_grain / sx, 0.5 / sy, 0.0), truncate=3.0)
    shadow *= arms.shadow_noise / max(float(shadow.std()), 1e-6)  # the noise, then the darkening
    shadow -= arms.shadow_hu
    shadow *= band[block][:, :, None]
    shadow *= tissue[block] != TISSUE["air"]
    image[block] += shadow


def randomised_image(tissue: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """A domain-randomised image (float32, x y z) of the tissue codes: every tissue a random mean
    and texture in RANDOM_HU, a multiplicative smooth bias field, a random resolution (blur,
    downsampling and back), noise and a gamma."""
    n = len(TISSUE)
    mean = rng.uniform(*RANDOM_HU, n).astype(np.float32)
    texture = rng.uniform(*RANDOM_TEXTURE_HU, n).astype(np.float32)
    image = mean[tissue] + texture[tissue] * _texture(rng, geometry, FINE_TEXTURE_MM)
    low = RANDOM_HU[0]
    image -= low
    image *= np.exp(rng.uniform(*RANDOM_BIAS) * _texture(rng, geometry, RANDOM_BIAS_MM))
    image += low
    factor = rng.uniform(*RANDOM_DOWNSAMPLE, 3)
    image = _blur(image, geometry.spacing, 0.4 * factor * np.asarray(geometry.spacing))
    small = ndimage.zoom(image, 1.0 / factor, order=1)
    image = ndimage.zoom(small, np.asarray(image.shape) / small.shape, order=1)
    image += _noise(rng, image.shape, geometry.spacing, rng.uniform(*RANDOM_NOISE_HU), 0.0)
    lo, hi = float(image.min()), float(image.max())
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0) ** np.exp(rng.normal(0.0, RANDOM_GAMMA_SD))
    return (RANDOM_HU[0] + (RANDOM_HU[1] - RANDOM_HU[0]) * scaled).astype(np.float32)


# ------------------------------------------------------------------------------------ phantoms

@dataclass
class Phantom:
    """A synthetic CT: image (float32 HU) and labels (uint8 LABELS) indexed (x, y, z) canonical
    (RAS+) on `geometry`'s grid; the contrast phase, whether the image is domain-randomised, how
    many lesions show, the storage orientation (axis codes) its files are written in, the name
    of its scan range (SCAN_RANGES, EXTRA_RANGES; "given" for a grid passed in) and the fraction
    of its pancreas replaced by fat (fatty_infiltration; 0: a lean gland), the factor on its
    pancreas's thickness (ATROPHIC_PANCREAS; 1: a full gland), the kind of metal in it
    (metal_implants; "": none), the thickness of the fat plane round its pancreas
    (PANCREAS_FAT_PLANE_MM; 0: none), the HU of its colon's fluid content (FLUID_COLON_HU;
    None: mottled faeces), whether it has pelvic organs and hips (_pelvic_organ_parts), how many
    HU its liver is lowered by fat (FATTY_LIVER_DROP_HU; 0: a lean liver), whether its kidney
    label includes the renal sinus fat (_kidney_parts) and the factor on its pancreatic head's
    length (SHORT_PANCREAS_HEAD; 1: a full head) and the common factor on its organs' enhancement
    (draw_organ_enhancement; None: the case's bolus, as its vessels), whether its liver has fat-filled
    fissures (UMBILICAL_FISSURE), whether its arms lie beside the body (Arms), whether its left
    lobe is long (LEFT_LOBE_TONGUE), the HU of its stomach's food (FULL_STOMACH_HU; None: the usual
    content), whether its spleen is large (LARGE_SPLEEN_SIZE) and how many HU a region of its liver
    is darker (LIVER_REGION_HU; 0: none)."""

    image: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    phase: str
    randomised: bool
    lesions: int
    orientation: tuple[str, str, str]
    scan: str = "given"
    fatty: float = 0.0
    metal: str = ""
    pancreas_thickness: float = 1.0
    fat_plane_mm: float = 0.0
    colon_hu: float | None = None
    pelvis: bool = False
    liver_drop_hu: float = 0.0
    sinus_labelled: bool = False
    pancreas_head: float = 1.0
    organ_enhancement: float | None = None
    liver_fissures: bool = False
    arms: bool = False
    long_left_lobe: bool = False
    stomach_hu: float | None = None
    large_spleen: bool = False
    liver_region_hu: float = 0.0

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along x, y, z."""
        return self.geometry.spacing


def case_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of case `index` of a set made with `seed`: depends on nothing else."""
    return np.random.SeedSequence(seed, spawn_key=(index,))


def _stream(root: np.random.SeedSequence, k: int) -> np.random.Generator:
    """Independent random stream k of a seed (anatomy, geometry, appearance, storage, extent, fat,
    metal, atrophy, fat plane, colon, pelvis, liver fat, kidney sinus, pancreatic head, phase, organ
    enhancement, liver fissures, arms, left lobe, stomach, spleen, liver region)."""
    return np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, k)))


@dataclass(frozen=True)
class Mix:
    """What fraction of a set's cases vary beyond the defaults: randomise, images domain-randomised
    (randomised_image); chest, slab, thin_slab, liver_cut and lower_abdomen, scans of EXTRA_RANGES' ranges of
    those names; fatty, a fatty pancreas (fatty_infiltration); metal, implants and their streaks (metal_implants);
    atrophic, a thinner pancreas (ATROPHIC_PANCREAS); fat_plane, fat round the pancreas's body and tail that the
    gut keeps out of (PANCREAS_FAT_PLANE_MM); fluid_colon, a colon of homogeneous fluid (FLUID_COLON_HU);
    pelvis, the pelvic organs, hip muscles and hips (_pelvic_organ_parts); fatty_liver, a liver
    darkened by fat (FATTY_LIVER_DROP_HU); kidney_sinus, the renal sinus fat labelled kidney as in
    sets made before 2026-12-05 (_kidney_parts); short_head, a short pancreatic head
    (SHORT_PANCREAS_HEAD); non_contrast, a non-contrast scan whatever phase PHASE_PROBABILITIES
    drew; organ_enhancement, organs enhancing apart from the vessels (draw_organ_enhancement);
    liver_fissures, fat-filled fissures in the liver (UMBILICAL_FISSURE); arms, the arms beside the
    body and their shadow across it (Arms, arm_shadow); long_left_lobe, a left lobe reaching down in
    front of the stomach (LEFT_LOBE_TONGUE); full_stomach, smooth food as dense as the organs in the
    stomach (FULL_STOMACH_HU); large_spleen, a large, bulky spleen with the left kidney below it
    (LARGE_SPLEEN_SIZE); liver_region, a darker region of the liver (liver_region_offset). Each
    is drawn from a stream of its own: a case that does not get a variation is the
    case of the plain set."""

    randomise: float = 0.0
    chest: float = 0.0
    slab: float = 0.0
    fatty: float = 0.0
    metal: float = 0.0
    atrophic: float = 0.0
    fat_plane: float = 0.0
    thin_slab: float = 0.0
    fluid_colon: float = 0.0
    liver_cut: float = 0.0
    pelvis: float = 0.0
    fatty_liver: float = 0.0
    kidney_sinus: float = 0.0
    short_head: float = 0.0
    non_contrast: float = 0.0
    organ_enhancement: float = 0.0
    liver_fissures: float = 0.0
    arms: float = 0.0
    long_left_lobe: float = 0.0
    full_stomach: float = 0.0
    large_spleen: float = 0.0
    liver_region: float = 0.0
    lower_abdomen: float = 0.0

    def __post_init__(self) -> None:
        if not all(0.0 <= p <= 1.0 for p in astuple(self)) or sum(p for _, p in self._extra_fractions()) > 1.0:
            raise ValueError(f"fractions must lie in [0, 1], {' + '.join(EXTRA_RANGES)} at most 1: {self}")

    def _extra_fractions(self) -> list[tuple[str, float]]:
        """(EXTRA_RANGES name, fraction) in EXTRA_RANGES' order."""
        return [(name, getattr(self, name.replace(" ", "_"))) for name in EXTRA_RANGES]

    def extra_range(self, u: float) -> str | None:
        """The EXTRA_RANGES entry of a case whose extent stream drew u in [0, 1), None for SCAN_RANGES."""
        edge = 0.0
        for name, p in self._extra_fractions():
            edge += p
            if u < edge:
                return name
        return None


PLAIN = Mix()  # no variations: every case as drawn from SCAN_RANGES, in CT values


def generate(seed: int | np.random.SeedSequence, *, geometry: Geometry | None = None, max_side: int | None = None,
             mix: Mix = PLAIN) -> Phantom:
    """The phantom of a seed: its anatomy, on `geometry` (default: one drawn from the seed), capped
    to max_side voxels per axis; its image domain-randomised or without contrast and its scan
    range one of the extra ones, its pancreas fatty, atrophic, short-headed or in a fat plane, its
    colon fluid, its spleen large, its liver with a darker region, its arms beside it and metal in it
    with mix's probabilities. The anatomy depends only on the seed, on whether the pancreas is
    atrophic or short-headed, on its fat plane, on the liver's fissures, on its left lobe, on its
    spleen's size and on the arms, never on the grid; the labels never on mix.randomise,
    mix.non_contrast, mix.fatty, mix.metal, mix.fat_plane, mix.fluid_colon, mix.pelvis,
    mix.fatty_liver, mix.organ_enhancement, mix.arms, mix.full_stomach or mix.liver_region
    (mix.kidney_sinus changes the labels, and the image only where a kidney tumour reaches into the
    sinus: it stops at the unlabelled sinus fat)."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    (anatomy, scan, look, storage, extent, fat, implant, atrophy, plane, colon, pelvic, steatosis, sinus, head,
     unenhanced, enhancement, fissured, armed, lobed, fed, grown, patched) = (_stream(root, k) for k in range(22))
    thickness = float(atrophy.uniform(*ATROPHIC_PANCREAS)) if atrophy.random() < mix.atrophic else 1.0
    fat_plane_mm = float(plane.uniform(*PANCREAS_FAT_PLANE_MM)) if plane.random() < mix.fat_plane else 0.0
    pelvis = bool(pelvic.random() < mix.pelvis)
    sinus_labelled = bool(sinus.random() < mix.kidney_sinus)
    head_length = float(head.uniform(*SHORT_PANCREAS_HEAD)) if head.random() < mix.short_head else 1.0
    fissures = bool(fissured.random() < mix.liver_fissures)
    arms = draw_arms(armed) if armed.random() < mix.arms else None
    long_left_lobe = bool(lobed.random() < mix.long_left_lobe)
    large_spleen = bool(grown.random() < mix.large_spleen)
    parts = draw_anatomy(anatomy, thickness, fat_plane_mm, pelvic if pelvis else None, sinus_labelled, head_length,
                         fissured if fissures else None, arms, lobed if long_left_lobe else None,
                         grown if large_spleen else None)
    if geometry is not None:
        geometry, scan_name = capped(geometry, max_side), "given"
    else:
        geometry, scan_name = draw_geometry(scan, max_side, mix.extra_range(extent.random()))
    tissue, labels, lesions = render(parts, geometry)
    fatty = float(fat.uniform(*FATTY_PANCREAS)) if fat.random() < mix.fatty else 0.0
    if fatty:
        fatty_infiltration(tissue, labels, geometry, fat, fatty)
    colon_hu = float(colon.uniform(*FLUID_COLON_HU)) if colon.random() < mix.fluid_colon else None
    liver_drop_hu = float(steatosis.uniform(*FATTY_LIVER_DROP_HU)) if steatosis.random() < mix.fatty_liver else 0.0
    stomach_hu = float(fed.uniform(*FULL_STOMACH_HU)) if fed.random() < mix.full_stomach else None
    region_hu = float(patched.uniform(*LIVER_REGION_HU)) if patched.random() < mix.liver_region else 0.0
    randomised = bool(look.random() < mix.randomise)
    phase = PHASES[look.choice(len(PHASES), p=PHASE_PROBABILITIES)]
    if unenhanced.random() < mix.non_contrast:
        phase = PHASES[0]
    organ_enhancement, organ_factors = (draw_organ_enhancement(enhancement)
                                        if enhancement.random() < mix.organ_enhancement else (None, None))
    if randomised or phase == PHASES[0]:
        organ_enhancement, organ_factors = None, None  # no enhancement to scale
    if randomised:
        region_hu = 0.0  # no CT values to lower
    offset = (liver_region_offset(tissue, geometry, patched, region_hu, float(patched.uniform(*LIVER_REGION_SHARE)))
              if region_hu else None)
    image = (randomised_image(tissue, geometry, look) if randomised
             else ct_image(tissue, geometry, phase, look, colon_hu, liver_drop_hu, organ_factors, stomach_hu, offset))
    del offset
    if arms is not None and not randomised:
        arm_shadow(image, tissue, geometry, arms, armed)
    metal = ""
    if implant.random() < mix.metal:
        kind = METAL_KINDS[implant.integers(len(METAL_KINDS))]
        metal = kind if metal_implants(image, tissue, labels, geometry, implant, kind) else ""
    orientation = ORIENTATIONS[storage.choice(len(ORIENTATIONS), p=ORIENTATION_P)]
    return Phantom(image, labels, geometry, phase, randomised, lesions, orientation, scan_name, fatty, metal, thickness,
                   fat_plane_mm, None if randomised else colon_hu, pelvis, 0.0 if randomised else liver_drop_hu,
                   sinus_labelled, head_length, organ_enhancement, fissures, arms is not None, long_left_lobe,
                   None if randomised else stomach_hu, large_spleen, region_hu)


def save(phantom: Phantom, images_dir: Path, labels_dir: Path, case: str) -> tuple[Path, Path]:
    """Write images_dir/<case>_0000.nii.gz (int16 HU, clipped to HU_STORED) and labels_dir/<case>.nii.gz
    (uint8) in the phantom's storage orientation, sharing one affine (qform and sform, code 1)."""
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(phantom.orientation))
    affine = phantom.geometry.affine @ inv_ornt_aff(ornt, phantom.labels.shape)
    image = np.clip(np.rint(phantom.image), *HU_STORED).astype(np.int16)
    paths = (Path(images_dir) / f"{case}_0000.nii.gz", Path(labels_dir) / f"{case}.nii.gz")
    for data, path in zip((image, phantom.labels), paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(np.ascontiguousarray(apply_orientation(data, ornt)), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(path))
    return paths


# ------------------------------------------------------------------------------------ preview and command line

WINDOW_HU = (-160.0, 240.0)
LABEL_COLOURS = {LIVER: "red", KIDNEY: "gold", SPLEEN: "deepskyblue", PANCREAS: "lime"}


PELVIS_VIEW_MM = 80.0  # a preview shows the hips where the scan runs this far below the organs


def _display(plane: np.ndarray) -> np.ndarray:
    """A (x, y) or (x, z) plane as an image in radiological view: patient's right on the left,
    anterior or superior at the top."""
    return plane[::-1, ::-1].T


def preview_planes(image: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float]
           ) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Axial planes at the liver's and the kidneys' largest sections (or, where the CT holds metal,
    at its largest section instead of the kidneys'; where it runs PELVIS_VIEW_MM or more below the
    organs, at the largest section of bone there: the hips) and a coronal plane through the
    kidneys of a canonical (x, y, z) CT in HU, its labels and spacing (mm): (title, image, labels,
    pixel aspect)."""
    sx, sy, sz = spacing
    views = []
    metal = (image >= METAL_HU - 1).sum(axis=(0, 1))
    organs = np.flatnonzero(labels.any(axis=(0, 1)))
    below = organs[0] if len(organs) else 0
    if metal.any():
        second = ("metal", metal)
    elif below * sz >= PELVIS_VIEW_MM:
        second = ("pelvis", np.where(np.arange(labels.shape[2]) < below, (image > 300).sum(axis=(0, 1)), 0))
    else:
        second = ("kidney", (labels == KIDNEY).sum(axis=(0, 1)))
    for name, area in (("liver", (labels == LIVER).sum(axis=(0, 1))), second):
        k = int(area.argmax()) if area.any() else labels.shape[2] // 2
        views.append((f"axial, {name} level", image[:, :, k], labels[:, :, k], sy / sx))
    kidney = np.argwhere(labels == KIDNEY)
    j = int(kidney[:, 1].mean()) if len(kidney) else labels.shape[1] // 2
    views.append(("coronal", image[:, j, :], labels[:, j, :], sz / sx))
    return views


def _real_case(ct: Path, labels: Path) -> tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A real CT and labels of it (FLARE21 numbering: a reference, or a prediction to look at)
    read into the canonical orientation: the preview row's title, image (HU), labels and spacing (mm)."""
    from inference.imageio import read_ct

    def read(path: Path):
        try:
            return read_ct(path)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None

    image, mask = read(ct), read(labels)
    if mask.data.shape != image.data.shape:
        raise InputError(f"{labels}: shape {mask.data.shape} differs from the CT's {image.data.shape}")
    shape = "x".join(str(n) for n in image.data.shape)
    spacing = "x".join(f"{s:.2f}" for s in image.spacing)
    title = f"real CT {ct.name}: {shape} voxels of {spacing} mm, labels of {labels.name}"
    return title, image.data, np.rint(mask.data).astype(np.uint8), image.spacing


def preview(path: Path, seed: int = 0, cases: int = 3, start: int = 0, max_side: int | None = None,
            real: tuple[Path, Path] | None = None, mix: Mix = PLAIN) -> None:
    """Render a PNG of `cases` phantoms (cases start.. of seed, with mix's variations): two axial and
    one coronal plane each, soft-tissue window WINDOW_HU, organ outlines in LABEL_COLOURS; `real`
    (a CT and its labels) adds the same views of a real scan as the first row, to set beside them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [_real_case(*real)] if real is not None else []
    for index in range(start, start + cases):
        phantom = generate(case_seed(seed, index), max_side=max_side, mix=mix)
        shape = "x".join(str(n) for n in phantom.labels.shape)
        spacing = "x".join(f"{s:.2f}" for s in phantom.spacing)
        rows.append((f"case {index}: {phantom.phase}, {phantom.scan}, {shape} voxels of {spacing} mm, "
                     f"{phantom.lesions} lesion(s)" + (f", {phantom.metal}" if phantom.metal else ""),
                     phantom.image, phantom.labels, phantom.spacing))
    fig = Figure(figsize=(10.0, 3.5 * len(rows) + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    for subfigure, (title, image, labels, spacing) in zip(fig.subfigures(len(rows), 1, squeeze=False)[:, 0], rows):
        subfigure.suptitle(title, fontsize=9)
        planes = preview_planes(image, labels, spacing)
        for ax, (view, plane, plane_labels, aspect) in zip(subfigure.subplots(1, 3), planes):
            ax.imshow(_display(plane), cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=aspect)
            for organ, colour in LABEL_COLOURS.items():
                mask = _display(plane_labels == organ)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_title(view, fontsize=8)
            ax.set_axis_off()
    fig.suptitle(f"{'real and ' if real else ''}synthetic abdominal CT, window {WINDOW_HU[0]:.0f} to "
                 f"{WINDOW_HU[1]:.0f} HU; outlines: " + ", ".join(f"{LABELS[k]} {c}" for k, c in LABEL_COLOURS.items()),
                 fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def _case_row(phantom: Phantom, case: str, seed: int, index: int) -> dict[str, str]:
    """The cases.csv row of one case."""
    present = [LABELS[k] for k in sorted(LABELS) if (phantom.labels == k).any()]
    return {"case": case, "seed": str(seed), "index": str(index), "phase": phantom.phase,
            "randomised": str(phantom.randomised).lower(), "lesions": str(phantom.lesions),
            "shape": "x".join(str(n) for n in phantom.labels.shape),
            "spacing": "x".join(f"{s:.4f}" for s in phantom.spacing),
            "orientation": "".join(phantom.orientation), "scan": phantom.scan,
            "fatty_pancreas": f"{phantom.fatty:.2f}", "pancreas_thickness": f"{phantom.pancreas_thickness:.2f}",
            "pancreas_fat_plane_mm": f"{phantom.fat_plane_mm:.1f}",
            "colon_fluid_hu": "none" if phantom.colon_hu is None else f"{phantom.colon_hu:.0f}",
            "pelvis": "true" if phantom.pelvis else "false",
            "liver_fat_drop_hu": f"{phantom.liver_drop_hu:.0f}",
            "kidney_sinus_labelled": "true" if phantom.sinus_labelled else "false",
            "pancreas_head": f"{phantom.pancreas_head:.2f}",
            "organ_enhancement": "bolus" if phantom.organ_enhancement is None else f"{phantom.organ_enhancement:.2f}",
            "liver_fissures": "true" if phantom.liver_fissures else "false",
            "arms": "true" if phantom.arms else "false",
            "long_left_lobe": "true" if phantom.long_left_lobe else "false",
            "stomach_food_hu": "none" if phantom.stomach_hu is None else f"{phantom.stomach_hu:.0f}",
            "large_spleen": "true" if phantom.large_spleen else "false",
            "liver_region_hu": f"{phantom.liver_region_hu:.0f}",
            "metal": phantom.metal or "none",
            "organs": " ".join(present)}


def set_case_name(prefix: str, index: int) -> str:
    """The name of case `index` of a set written with `prefix` (its label file's name without .nii.gz)."""
    return f"{prefix}_{index:04d}"


def _write_case(out: Path, seed: int, index: int, prefix: str, max_side: int | None, mix: Mix) -> dict[str, str]:
    """Generate and write case `index` of seed; its cases.csv row."""
    phantom = generate(case_seed(seed, index), max_side=max_side, mix=mix)
    case = set_case_name(prefix, index)
    save(phantom, out / "images", out / "labels", case)
    return _case_row(phantom, case, seed, index)


PREVIEW_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # what --preview writes, by the name's suffix


def other_cases(out: Path, names: set[str], label_folders: tuple[str, ...] = ("labels",)) -> str:
    """Where out/images or the label folders hold cases not among `names` (another set's), what a
    usage error says of them ("holds 2 case(s) of another set (a, b)"); else ""."""
    found = set()
    for folder, image in ((out / "images", True), *((out / name, False) for name in label_folders)):
        found.update(case_name(path.name, image) for path in (nifti_files(folder) if folder.is_dir() else ()))
    others = sorted(found - names)
    if not others:
        return ""
    return f"holds {len(others)} case(s) of another set ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"


def write_set(out: Path, cases: int, seed: int, start: int = 0, prefix: str = "phantom",
              max_side: int | None = None, mix: Mix = PLAIN, workers: int = 1) -> list[dict[str, str]]:
    """Write cases start..start+cases-1 of seed (with mix's variations) as FLARE-layout pairs under
    out/images and out/labels (`workers` processes), out/cases.csv and out/pathological.txt (the
    cases with lesions, which training samples more often); the rows of cases.csv."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    indices = range(start, start + cases)
    write = partial(_write_case, out, seed, prefix=prefix, max_side=max_side, mix=mix)
    bar = partial(tqdm, total=cases, desc="phantoms", unit="case", file=sys.stderr, disable=None)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(bar(pool.map(write, indices)))
    else:
        rows = list(bar(map(write, indices)))
    with open(out / "cases.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / PATHOLOGICAL_LIST).write_text("".join(f"{r['case']}\n" for r in rows if int(r["lesions"])))
    return rows


def _mix_help() -> dict[str, str]:
    """The command line's help for each of Mix's fractions, keyed by field name."""
    def mm(bounds: Sequence[float]) -> str:
        return f"{bounds[0]:.0f}-{bounds[1]:.0f}"

    texts = {
        "randomise": "fraction of the cases whose image is domain-randomised",
        "chest": f"fraction of the scans reaching up into the chest, {mm(EXTRA_RANGES['chest'][0])} mm above the "
                 "liver dome",
        "slab": f"fraction of the scans that are short slabs ({mm(EXTRA_RANGES['slab'][1])} mm) through the upper "
                "abdomen",
        "fatty": f"fraction of the cases with a fatty pancreas ({mm([100 * v for v in FATTY_PANCREAS])} %% of it "
                 "lobular fat)",
        "metal": "fraction of the cases with metal implants (surgical clips or spinal screws) and their streaks",
        "atrophic": f"fraction of the cases with an atrophic pancreas ({ATROPHIC_PANCREAS[0]:.2f}-"
                    f"{ATROPHIC_PANCREAS[1]:.2f} of the full thickness)",
        "fat_plane": f"fraction of the cases with {PANCREAS_FAT_PLANE_MM[0]:.0f}-{PANCREAS_FAT_PLANE_MM[1]:.0f} mm "
                     "of fat round the pancreas's body and tail that no gut enters",
        "thin_slab": f"fraction of the scans that are thin slabs ({mm(EXTRA_RANGES['thin slab'][1])} mm) just below "
                     "the liver dome, mostly above the kidneys",
        "fluid_colon": f"fraction of the cases whose colon holds homogeneous fluid of {FLUID_COLON_HU[0]:.0f}-"
                       f"{FLUID_COLON_HU[1]:.0f} HU instead of mottled faeces",
        "liver_cut": f"fraction of the scans starting {mm([-v for v in EXTRA_RANGES['liver cut'][0][::-1]])} mm below "
                     "the liver dome, through the liver's widest part, and running "
                     f"{mm(EXTRA_RANGES['liver cut'][1])} mm down",
        "pelvis": "fraction of the cases with pelvic organs and hips below the iliac crest: gluteal muscles, "
                  "bladder, rectum, femoral heads and pubic bones",
        "fatty_liver": f"fraction of the cases whose liver fat lowers by {FATTY_LIVER_DROP_HU[0]:.0f}-"
                       f"{FATTY_LIVER_DROP_HU[1]:.0f} HU in every phase",
        "kidney_sinus": "fraction of the cases whose kidney label includes the renal sinus fat, as in sets made "
                        "before 2026-12-05",
        "non_contrast": "fraction of the cases scanned without contrast whatever phase they drew, on top of the "
                        f"{100 * PHASE_PROBABILITIES[0]:.0f} %% whose drawn phase is non-contrast already",
        "short_head": f"fraction of the cases whose pancreatic head is {SHORT_PANCREAS_HEAD[0]:.1f}-"
                      f"{SHORT_PANCREAS_HEAD[1]:.1f} of its full length, the gland ending near the midline",
        "organ_enhancement": "fraction of the cases whose liver, spleen, kidneys and pancreas enhance apart from the "
                             f"vessels: {ORGAN_ENHANCEMENT[0]:.1f}-{ORGAN_ENHANCEMENT[1]:.1f} of their usual "
                             f"enhancement, each organ x{ORGAN_ENHANCEMENT_SPREAD[0]:.2f}-"
                             f"{ORGAN_ENHANCEMENT_SPREAD[1]:.2f}",
        "liver_fissures": "fraction of the cases whose liver has fat-filled fissures left out of its label: the "
                          f"umbilical fissure, {FISSURE_WIDTH_MM[0]:.1f}-{FISSURE_WIDTH_MM[1]:.0f} mm, and often the "
                          "ligamentum venosum's and fat in the porta hepatis",
        "arms": "fraction of the cases whose arms lie beside the body, with the darker, noisier band their "
                f"rays leave across it ({ARM_SHADOW_HU[0]:.0f}-{ARM_SHADOW_HU[1]:.0f} HU)",
        "long_left_lobe": "fraction of the cases whose liver's left lobe reaches down in front of the stomach",
        "full_stomach": f"fraction of the cases whose stomach is full of food of {FULL_STOMACH_HU[0]:.0f}-"
                        f"{FULL_STOMACH_HU[1]:.0f} HU without gas bubbles, as dense as the organs beside it",
        "large_spleen": f"fraction of the cases whose spleen is large and bulky (x{LARGE_SPLEEN_SIZE[0]:.1f}-"
                        f"{LARGE_SPLEEN_SIZE[1]:.1f}), reaching back in towards the spine, the left kidney "
                        f"{LARGE_SPLEEN_KIDNEY_DROP_MM[0]:.0f}-{LARGE_SPLEEN_KIDNEY_DROP_MM[1]:.0f} mm lower",
        "liver_region": f"fraction of the cases whose liver has a region {LIVER_REGION_HU[0]:.0f}-"
                        f"{LIVER_REGION_HU[1]:.0f} HU darker ({100 * LIVER_REGION_SHARE[0]:.0f}-"
                        f"{100 * LIVER_REGION_SHARE[1]:.0f} %% of it: uneven enhancement or focal fat), its label kept",
        "lower_abdomen": f"fraction of the scans starting {mm([-v for v in EXTRA_RANGES['lower abdomen'][0][::-1]])} "
                         "mm below the liver dome, below the spleen and through the liver's lowest part or below "
                         f"it, and running {mm(EXTRA_RANGES['lower abdomen'][1])} mm down (with --pelvis, into the "
                         "pelvis and hips)",
    }
    return {f.name: texts[f.name] for f in fields(Mix)}


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m training.phantom", "Write synthetic abdominal CTs with known labels (FLARE layout).", [
        "flare-phantom --out example --cases 3 --seed 2026",
        "flare-phantom --out phantoms --cases 240 --seed 1 --max-side 192 --workers 2   # a training set",
        "flare-phantom --preview phantoms.png --seed 23"])
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder to write images/, labels/ and cases.csv into (this or --preview)")
    parser.add_argument("--cases", type=int, metavar="N", help="number of cases (required with --out; default 3 with --preview)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the set (default %(default)s)")
    parser.add_argument("--start", type=int, default=0, metavar="I", help="index of the first case (default %(default)s)")
    parser.add_argument("--max-side", type=int, metavar="N",
                        help="at most this many voxels per axis, the field of view kept (default: full size, 512 in-plane)")
    for name, text in _mix_help().items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=0.0, metavar="P",
                            help=f"{text} (default %(default)s)")
    parser.add_argument("--prefix", default="phantom", metavar="NAME", help="case name prefix (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes writing cases (default %(default)s)")
    parser.add_argument("--preview", type=Path, metavar="PNG", help="render slices of the cases to PNG instead of --out")
    parser.add_argument("--real", type=Path, nargs=2, metavar=("CT", "LABELS"),
                        help="with --preview: a real CT and labels of it (FLARE21 numbering: a reference or a "
                        "prediction) shown first, beside the phantoms")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.out is None) == (args.preview is None):
        parser.error("give exactly one of --out and --preview")
    if args.out is not None and args.cases is None:
        parser.error("--cases is required with --out")
    if args.real is not None and args.preview is None:
        parser.error("--real goes with --preview")
    if args.cases is not None and args.cases < 1:
        parser.error("--cases must be at least 1")
    if args.seed < 0 or args.start < 0:
        parser.error("--seed and --start must not be negative")
    if args.max_side is not None and args.max_side < 8:
        parser.error("--max-side must be at least 8")
    try:
        mix = Mix(**{f.name: getattr(args, f.name) for f in fields(Mix)})
    except ValueError:
        options = [f"--{f.name.replace('_', '-')}" for f in fields(Mix)]
        extras = [f"--{name.replace(' ', '-')}" for name in EXTRA_RANGES]
        parser.error(f"{', '.join(options[:-1])} and {options[-1]} must lie in [0, 1], {' plus '.join(extras)} at most 1")
    began = time.perf_counter()
    if args.preview is not None:
        if args.preview.suffix.lower() not in PREVIEW_FORMATS:
            parser.error(f"--preview {args.preview}: name a {', '.join(PREVIEW_FORMATS)} file")
        cli.refuse_unwritable(parser, "--preview", args.preview, folder=False)
        try:
            preview(args.preview, args.seed, args.cases or 3, args.start, args.max_side, args.real, mix)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote a preview of {args.cases or 3} phantom(s) to {args.preview} "
              f"in {time.perf_counter() - began:.1f} s")
        return 0
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    for folder in (args.out, args.out / "images", args.out / "labels"):
        cli.refuse_unwritable(parser, "--out", folder, folder=True)
    if others := other_cases(args.out, {set_case_name(args.prefix, i) for i in range(args.start, args.start + args.cases)}):
        parser.error(f"--out {args.out}: {others}, which this set's cases.csv and pathological.txt would not list "
                     "but training would read: choose an empty folder")
    rows = write_set(args.out, args.cases, args.seed, args.start, args.prefix, args.max_side, mix, args.workers)
    print(f"wrote {len(rows)} phantom(s) ({sum(r['randomised'] == 'true' for r in rows)} randomised) to "
          f"{args.out}/images and {args.out}/labels, listed in {args.out}/cases.csv, "
          f"in {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
