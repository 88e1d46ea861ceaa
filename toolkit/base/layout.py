"""A training run's folder, named once: every stage, benchmark and test finds a run's files through this.

``train`` writes the folder, ``pack`` copies the committable part of it, and ``export``, ``drift`` and
``evaluate`` read it. A packed run (committed beside a shipped bundle) holds ``split.json``, a digest
of its split, instead of ``splits.csv``, which would copy the dataset's metadata into the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The files of the run folder at ``path``."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.json"  # the TrainConfig, with the input size resolved

    @property
    def splits(self) -> Path:
        return self.path / "splits.csv"  # the split file: one row per image

    @property
    def split_digest(self) -> Path:
        return self.path / "split.json"  # a packed run's split, as a digest to rebuild and check it by

    @property
    def model(self) -> Path:
        return self.path / "model.keras"  # the best model, with the decision rule folded into its head

    @property
    def decision(self) -> Path:
        return self.path / "decision.json"

    @property
    def reference(self) -> Path:
        return self.path / "reference.npz"  # the float model's probabilities on val and test, where it trained

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def state(self) -> Path:
        return self.path / "state.json"  # phases done, seconds, device: what resuming and benchmarks need

    @property
    def curves(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def confusion(self) -> Path:
        return self.path / "confusion_matrix.png"

    def after(self, stage: str) -> Path:
        return self.path / f"after_{stage}.weights.h5"  # while training: a stage's end, for resuming

    def backup(self, stage: str) -> Path:
        return self.path / f"backup_{stage}"  # while training: Keras's BackupAndRestore

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"  # while training: the last fine-tune epochs' weights, for averaging

    def committable(self) -> tuple[Path, ...]:
        """What ``pack`` copies as it is (beside the model it re-saves and the split it digests)."""
        return (
            self.config,
            self.state,
            self.history,
            self.metrics,
            self.decision,
            self.reference,
            self.curves,
            self.confusion,
        )

    def leftovers(self) -> tuple[Path, ...]:
        """What only training and resuming need; removed once the run is finished."""
        return (*self.path.glob("after_*.weights.h5"), *self.path.glob("backup_*"), self.snapshots)
