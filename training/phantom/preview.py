"""Previews: axial and coronal slices of phantoms (and of a real CT beside them) with their labels
outlined, as PNG, JPEG, PDF or SVG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flare_common.errors import InputError
from flare_common.files import atomic_output
from training.phantom.generator import PLAIN, Mix, case_seed, generate
from training.phantom.priors import KIDNEY, LABELS, LIVER, METAL_HU, PANCREAS, SPLEEN

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
    (a CT and its labels) adds the same views of a real scan as the first row, to set beside them.
    The file is written whole or not at all (atomic_output), in the format its suffix names."""
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
    with atomic_output(path) as f:
        fig.savefig(f, dpi=80, format=path.suffix.lstrip(".").lower())
