"""Tensor axes and the kernels that depend on them: the one place where axis order is defined.

Images are handled in the closest canonical orientation of the scan (nibabel's RAS+), as arrays
indexed (x, y, z): x from the patient's left to right, y posterior to anterior, z
inferior to superior. The axial plane is (x, y); z runs across slices. Network tensors are
(batch, channel, x, y, z), so the in-plane kernel is (3, 3, 1) and the through-plane one (1, 1, 3)
exactly as the paper writes them. (The authors' tensors were (z, y, x), so their "3x3x1" ran over
z and y; here the kernels mean what the paper means.)
"""
from __future__ import annotations

IN_PLANE_KERNEL = (3, 3, 1)  # axial 3x3, one slice
THROUGH_PLANE_KERNEL = (1, 1, 3)  # across three slices
