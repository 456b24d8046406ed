"""The anatomy's numbers in one place: positions and sizes (mm, in the patient frame) of the trunk,
the organs, the vessels, the gut, the ribs, the chest and the arms.
"""
from __future__ import annotations

import numpy as np

from training.phantom.scan import DOME_MM

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
