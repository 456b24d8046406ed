"""What a checkpoint tells the pipeline besides its networks' weights, without PyTorch: the
labels, each stage's input size and normalisation, the post-processing and what the weights were
trained on. inference.checkpoint.Models.spec() gives it for loaded networks; an OpenVINO export
stores it beside its networks (inference.openvino_runtime), so a CPU run with an export never
imports torch."""
from __future__ import annotations

from dataclasses import dataclass

from inference.postprocessing import Postprocessing
from inference.preprocessing import Normalisation

Size = tuple[int, int, int]
NETWORK_STAGES = ("coarse", "fine")  # the two networks a checkpoint holds, in the order the pipeline runs them


@dataclass(frozen=True)
class Spec:
    """labels: label -> organ name (output channel k is label k + 1); input_sizes and
    normalisation: per stage ("coarse", "fine"), the network's input size (x, y, z voxels) and how
    its input is normalised; post: the post-processing; trained_on: free text."""

    labels: dict[int, str]
    input_sizes: dict[str, Size]
    normalisation: dict[str, Normalisation]
    post: Postprocessing
    trained_on: str = ""

    def stages(self) -> list[str]:
        return list(self.input_sizes)

    def to_dict(self) -> dict:
        return {"labels": {str(k): v for k, v in self.labels.items()},
                "input_sizes": {stage: list(size) for stage, size in self.input_sizes.items()},
                "normalisation": {stage: n.to_dict() for stage, n in self.normalisation.items()},
                "postprocessing": self.post.to_dict(), "trained_on": self.trained_on}

    @classmethod
    def from_dict(cls, raw: dict) -> Spec:
        """From to_dict's form; ValueError, KeyError or TypeError where it is not."""
        sizes = {str(stage): tuple(int(n) for n in size) for stage, size in raw["input_sizes"].items()}
        if any(len(size) != 3 or min(size) < 1 for size in sizes.values()):
            raise ValueError(f"invalid input sizes {raw['input_sizes']}")
        normalisation = {stage: Normalisation.from_dict(raw["normalisation"][stage]) for stage in sizes}
        return cls({int(k): str(v) for k, v in raw["labels"].items()}, sizes, normalisation,
                   Postprocessing.from_dict(raw["postprocessing"]), str(raw["trained_on"]))
