"""The phantoms' labels, tissue classes and CT values: each tissue's HU prior per contrast phase,
texture, noise and blur, and the bounds of every variation of how tissues look (fatty glands and
livers, fluid colons, food, organ enhancement, metal and its streaks, domain randomisation).
"""
from __future__ import annotations

from flare_common.labels import label_names

LABELS = label_names("flare21")  # label value -> organ: the FLARE21 table the phantoms are labelled with
_VALUE = {name: value for value, name in LABELS.items()}
LIVER, KIDNEY, SPLEEN, PANCREAS = (_VALUE[name] for name in ("liver", "kidney", "spleen", "pancreas"))

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
