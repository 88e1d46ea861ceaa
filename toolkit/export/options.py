"""What ``export`` does and how the gate judges it: every option with its default, in one place.

Kept free of TensorFlow and Keras so that the CLI builds its flags and defaults from these classes in
a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.base.errors import ToolkitError
from toolkit.export.quantization import Quantization


@dataclass(frozen=True)
class Gate:
    """Release thresholds: exported vs reference. Points are percentage points."""

    min_agreement: float = 0.98
    max_balanced_accuracy_drop: float = 1.0
    max_recall_drop: float = 3.0
    max_sensitivity_drop: float = 2.0  # at each referral operating point


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; every field has the default ``python -m toolkit export`` uses."""

    run: Path | None = None  # None: the newest finished run under runs/
    quantization: Quantization = field(default_factory=Quantization)
    out: Path = Path("flutter_assets")
    name: str = ""  # "": the run's name
    calibration_images: int = 300
    seed: int = 0
    labels: Path | None = None  # a label file, one per line in output order; default: the class short names
    author: str = "lesion-toolkit"
    licence: str = ""  # "": from the training data
    model_version: str = "1.0.0"
    force: bool = False
    gate: Gate | None = field(default_factory=Gate)  # None: no drift check
    drift_split: str = "test"
    accept_drift: bool = False  # publish even when the gate fails
    selective: bool = False  # int8 failing the gate: retry with more calibration, then with layers in float
    reproduce: tuple[str, ...] = ()  # the commands that rebuild this bundle, for the model card

    def __post_init__(self) -> None:
        if self.name and (Path(self.name).name != self.name or self.name in (".", "..")):
            raise ToolkitError(f"--name {self.name!r} must be a folder name, not a path: the bundle goes into --out")
