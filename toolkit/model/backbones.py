"""The backbones the toolkit trains, as a registry: adding one is one entry here plus its test.

Kept free of Keras, so that the CLI lists and checks architectures without loading TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.base.errors import ToolkitError

_DENSENET_BOUNDARIES = {"conv5": "conv5_"}
VIEW_COUNTS = (1, 2, 4)  # mirror views a classifier can average (:mod:`toolkit.model.views`): the image, then mirrors


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, normalise its input, and where fine-tuning may start."""

    application: str  # the ``keras.applications`` constructor, looked up when a model is built
    preprocessing: str  # "tf": [-1, 1]; "torch": ImageNet mean/std
    default_size: int
    boundaries: dict[str, str]  # boundary name -> first layer (by name prefix) that fine-tunes
    default_boundary: str
    alphas: tuple[float, ...] = ()


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        "MobileNetV2",
        "tf",
        224,
        {"block_3": "block_3_", "block_13": "block_13_", "block_16": "block_16_"},
        "block_13",
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    ),
    "densenet121": BackboneSpec("DenseNet121", "torch", 224, _DENSENET_BOUNDARIES, "conv5"),
    "densenet169": BackboneSpec("DenseNet169", "torch", 224, _DENSENET_BOUNDARIES, "conv5"),
    "densenet201": BackboneSpec("DenseNet201", "torch", 224, _DENSENET_BOUNDARIES, "conv5"),
}


def backbone_spec(arch: str) -> BackboneSpec:
    if arch not in BACKBONES:
        raise ToolkitError(f"unknown architecture {arch!r}; expected one of {', '.join(BACKBONES)}")
    return BACKBONES[arch]


def check_views(views: int) -> None:
    """Refuse a mirror-view count a classifier cannot average."""
    if views not in VIEW_COUNTS:
        raise ToolkitError(f"views must be one of {', '.join(map(str, VIEW_COUNTS))}, not {views}")


def check_boundary(arch: str, boundary: str | int) -> None:
    """Refuse a fine-tune boundary that is neither ``all``, a layer count nor one of the backbone's named blocks.

    Whether a count fits the backbone needs the built model: :func:`toolkit.model.classifier.boundary_index` checks it.
    """
    boundaries = backbone_spec(arch).boundaries
    if boundary in ("", "all") or isinstance(boundary, int) or str(boundary).isdigit() or boundary in boundaries:
        return
    raise ToolkitError(
        f"unknown fine-tune boundary {boundary!r} for {arch}; "
        f"expected one of {', '.join(boundaries)}, all, or a layer count"
    )
