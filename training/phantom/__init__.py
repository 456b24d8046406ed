"""Synthetic abdominal CT with known ground truth: the project's one phantom generator.

A phantom is a float32 CT volume in Hounsfield units and a uint8 label map on the same grid (FLARE
labels `LABELS`: 1 liver, 2 kidneys (both), 3 spleen, 4 pancreas; lesions keep their organ's label),
made from a seed. Arrays are indexed (x, y, z) in nibabel's closest canonical orientation (RAS+, as
in inference/axes.py): x from the patient's left to right, y posterior to anterior, z inferior to
superior; spacing is in mm along (x, y, z). The same seed gives the same phantom, bit for bit, on
any CPU (fields.field_on).

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
darker region, kidneys labelled as their parenchyma alone (the renal pelvis's urine left out too),
and metal implants with their streaks (`Mix`); files are written in a storage
orientation drawn per case (RAS, LPS, LAS or permuted axes).

Modules, in the order they build on each other: `priors` (labels, tissues, CT values), `scan`
(grids), `atlas` (the anatomy's positions and sizes), `fields` (distance fields, parts, painting, tubes),
`body`, `skeleton`, `muscles`, `chest`, `organs`, `vessels`, `gut` (the structures), `anatomy` (one
patient), `metal` and `ct` (the image), `generator` (`generate`, `Mix`, `save`), `preview`, `sets`
(sets on disk) and `command_line`. This package re-exports what callers use.

Command line:

    python -m training.phantom --out DIR --cases N --seed S [--max-side N] [--randomise P] [--chest P] [--slab P]
        [--thin-slab P] [--fatty P] [--atrophic P] [--metal P] [--fat-plane P] [--fluid-colon P]
        [--pelvis P] [--fatty-liver P] [--liver-cut P] [--kidney-sinus P] [--short-head P]
        [--non-contrast P] [--organ-enhancement P] [--liver-fissures P] [--arms P] [--long-left-lobe P]
        [--full-stomach P] [--large-spleen P] [--liver-region P] [--lower-abdomen P] [--kidney-parenchyma P]
        [--prefix phantom] [--start I]
    python -m training.phantom --preview PNG [--cases 3] [--seed S] [--start I] [--max-side N] [--chest P] ...

writes DIR/images/<prefix>_<NNNN>_0000.nii.gz (int16 HU), DIR/labels/<prefix>_<NNNN>.nii.gz (uint8)
and DIR/cases.csv for cases NNNN = I .. I+N-1; case NNNN depends only on (S, NNNN) (`case_seed`).
--preview renders axial and coronal slices of a few cases instead. Exit code 0, 1 when a file cannot
be written (one line naming it), or 2 on usage errors.
"""
from training.phantom.anatomy import draw_anatomy
from training.phantom.command_line import main
from training.phantom.ct import ct_image, randomised_image
from training.phantom.fields import render
from training.phantom.generator import PLAIN, Mix, Phantom, case_seed, generate, save
from training.phantom.preview import preview, preview_planes
from training.phantom.priors import HU_PRIORS, HU_STORED, KIDNEY, LABELS, LIVER, PANCREAS, PHASES, SPLEEN, TISSUE
from training.phantom.scan import DOME_MM, EXTRA_RANGES, MATRIX, MAX_SLICES, SCAN_RANGES, Geometry, capped, centred, draw_geometry
from training.phantom.sets import other_cases, set_case_name, write_set

__all__ = [
    "HU_PRIORS", "HU_STORED", "KIDNEY", "LABELS", "LIVER", "PANCREAS", "PHASES", "SPLEEN", "TISSUE",
    "DOME_MM", "EXTRA_RANGES", "MATRIX", "MAX_SLICES", "SCAN_RANGES", "Geometry", "capped", "centred",
    "draw_geometry", "render", "draw_anatomy", "ct_image", "randomised_image", "PLAIN", "Mix", "Phantom",
    "case_seed", "generate", "save", "preview", "preview_planes", "other_cases", "set_case_name", "write_set",
    "main",
]
