"""What a training run is made of: every option of ``train``, with its default and its check, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.base.errors import ToolkitError
from toolkit.data.augment import AugmentConfig, check_mixup
from toolkit.data.balance import IMBALANCE_MODES
from toolkit.data.images import RESIZE_MODES
from toolkit.data.layouts import SPLIT_SEED, TEST_SHARE, VAL_SHARE
from toolkit.model.backbones import check_boundary, check_views
from toolkit.train.decision import OBJECTIVES

PHASES = ("head", "finetune")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "cosine")  # cut on a val-loss plateau; or one-epoch warm-up, then cosine to 0
DECISIONS = (*OBJECTIVES, "none")


@dataclass(frozen=True)
class Stage:
    """One ``fit`` call: a phase at one input size, from epoch ``first_epoch`` up to (not including) ``end_epoch``."""

    name: str  # its history rows, its backup and its checkpoint go by this name
    phase: str  # head or finetune: what trains (see :func:`toolkit.model.classifier.set_phase`)
    size: int
    first_epoch: int
    end_epoch: int


@dataclass(frozen=True)
class TrainConfig:
    """Everything needed to rerun a training run; saved as ``config.json`` in the run folder."""

    data: str = ""  # any layout the data layer reads, or a split file
    arch: str = "mobilenet_v2"
    alpha: float = 1.0
    input_size: int = 0  # 0: the backbone's default
    weights: str = "imagenet"  # imagenet, none, or a path
    resize_mode: str = "squash"
    boundary: str = ""  # "": the backbone's default; a name or a layer count
    epochs_head: int = 3
    epochs_finetune: int = 10
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    optimizer: str = "adam"  # adam or adamw
    schedule: str = "plateau"  # plateau: cut on a val-loss plateau; cosine: one-epoch warm-up, then cosine to 0
    weight_decay: float = 1e-4  # adamw only
    label_smoothing: float = 0.0
    dropout: float = 0.2
    imbalance: str = "class_weight"  # class_weight, oversample, logit_adjust or none
    class_weight_power: float = 1.0  # of the balanced weights, for class_weight and oversample; 0.5: square root
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    mixup: float = 0.0  # > 0: Beta parameter of mixup in the fine-tune (0.2 is usual); 0: off
    augment_head: bool = False  # False: phase 1 trains on cached backbone features
    bn_fix: bool = True  # only with pretrained weights: from scratch, BatchNorm must learn its statistics
    decision: str = "macro_f1"  # prior shift chosen on val by this metric, then temperature; "none": neither
    views: int = 1  # mirror views averaged inside the model once trained (1, 2 or 4): int8 fidelity, at their latency
    patience: int = 5
    average_last: int = 0  # N > 0: also try the mean weights of the last N fine-tune epochs, kept if val prefers it
    keep_average: bool = False  # True: that mean replaces the best epoch whatever val says (a val maximum flatters)
    ema: float = 0.0  # > 0: momentum of a moving average of the fine-tune's weights, used in their place; 0: off
    progressive_size: int = 0  # > 0: the fine-tune's first progressive_epochs run at this smaller size (cheaper)
    progressive_epochs: int = 0
    limit: int = 0  # 0: no limit; else at most this many images per split
    val: float = VAL_SHARE
    test: float = TEST_SHARE
    seed: int = SPLIT_SEED
    finetune_seed: int = 0  # > 0: another draw of the fine-tune's order, augmentation and mixup; split and head alike
    devices: str = "all"  # all, or N: data-parallel over this many local devices under JAX (batch_size is global)

    def __post_init__(self) -> None:
        """Refuse a bad value here, before any data is read or any model is built."""
        check_boundary(self.arch, self.boundary)  # also checks the architecture
        for what, value, allowed in (
            ("decision", self.decision, DECISIONS),
            ("resize mode", self.resize_mode, RESIZE_MODES),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("imbalance mode", self.imbalance, IMBALANCE_MODES),
        ):
            if value not in allowed:
                raise ToolkitError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
        for name in ("epochs_head", "epochs_finetune", "input_size", "limit", "patience"):
            if getattr(self, name) < 0:
                raise ToolkitError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.batch_size < 1:
            raise ToolkitError(f"batch size must be at least 1, not {self.batch_size}")
        if self.epochs_head + self.epochs_finetune == 0:
            raise ToolkitError("nothing to train: epochs_head and epochs_finetune are both 0; give one at least 1")
        check_mixup(self.mixup)
        check_views(self.views)
        if self.devices != "all" and not (self.devices.isdigit() and int(self.devices) > 0):
            raise ToolkitError(f"--devices takes all or a positive number, not {self.devices!r}")
        if not 0 <= self.ema < 1:
            raise ToolkitError(f"ema must be 0 (off) or a momentum below 1 (0.999 is usual), not {self.ema}")
        if self.average_last < 0:
            raise ToolkitError(f"average_last must be 0 (off) or a number of epochs, not {self.average_last}")
        if self.keep_average and self.average_last < 2:
            raise ToolkitError(f"keep_average needs average_last of 2 or more epochs, not {self.average_last}")
        if (self.progressive_size or self.progressive_epochs) and not (
            self.progressive_size > 0 and 0 < self.progressive_epochs < self.epochs_finetune
        ):
            raise ToolkitError(
                f"progressive resizing needs a size and 1 to {self.epochs_finetune - 1} of the {self.epochs_finetune} "
                f"fine-tune epochs: got size {self.progressive_size} for {self.progressive_epochs} epochs"
            )

    def stages(self, input_size: int) -> tuple[Stage, ...]:
        """The ``fit`` calls of the run, in order: the head, then the fine-tune (small first, if progressive)."""
        head = Stage("head", "head", input_size, 0, self.epochs_head)
        if not self.progressive_size:
            return head, Stage("finetune", "finetune", input_size, 0, self.epochs_finetune)
        small_size, small_epochs = self.progressive_size, self.progressive_epochs
        small = Stage(f"finetune_{small_size}px", "finetune", small_size, 0, small_epochs)
        return head, small, Stage("finetune", "finetune", input_size, small_epochs, self.epochs_finetune)

    @classmethod
    def from_json(cls, payload: dict) -> TrainConfig:
        payload = {k: v for k, v in payload.items() if k != "distribution"}  # recorded beside it: see place()
        augment = payload.get("augment")
        return cls(**{**payload, "augment": AugmentConfig(**augment) if augment else None})
