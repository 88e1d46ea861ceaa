"""Backbones in a registry, and the classifier built around them with the BatchNorm fix.

The classifier takes raw RGB in [0, 255] (uint8 batches or pixels from an app) and normalises inside
the graph, each backbone as its ``keras.applications`` preprocessing does, so an exported model needs
no preprocessing beyond resizing.

The BatchNorm fix: the backbone's BatchNorm layers are never trainable (:func:`set_phase`). A
non-trainable Keras BatchNorm normalises with its moving statistics even when ``fit`` runs it with
``training=True`` (which Keras 3 passes into nested models whatever they were called with), so
fine-tuning batches never replace the pretrained statistics and training and inference normalise
alike (the Keras 2.2.4 trap: frozen BN layers trained on batch statistics).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.model.backbones import backbone_spec, check_boundary

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


def normalisation_layer(arch: str) -> keras.layers.Layer:
    """The backbone's ``keras.applications`` preprocessing as a layer, so it travels inside the model."""
    if backbone_spec(arch).preprocessing == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")
    return keras.layers.Normalization(mean=IMAGENET_MEAN, variance=IMAGENET_STD**2, name="normalise")


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def build_backbone(
    arch: str, input_size: int, weights: str = "imagenet", alpha: float = 1.0, flexible: bool = False
) -> keras.Model:
    """A headless backbone; ``weights`` is ``imagenet``, ``none`` or the path to a weights file.

    ``flexible``: it takes any input size (``input_size`` is still checked), as progressive resizing needs.
    """
    spec = backbone_spec(arch)
    if spec.alphas and alpha not in spec.alphas:
        raise ToolkitError(f"received alpha={alpha} for {arch}; expected one of {', '.join(map(str, spec.alphas))}")
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise ToolkitError(f"weights file not found: {weights}")
    shape = (None, None, 3) if flexible else (input_size, input_size, 3)
    build = getattr(keras.applications, spec.application)
    options = {"alpha": alpha} if spec.alphas else {}  # DenseNet has no width multiplier
    try:
        backbone = build(
            **options, include_top=False, weights=None if weights != "imagenet" else "imagenet", input_shape=shape
        )
        if flexible:
            backbone.compute_output_shape((1, input_size, input_size, 3))  # refuses a size the backbone cannot take
    except ValueError as error:
        raise ToolkitError(f"{arch} cannot take input size {input_size}: {str(error).splitlines()[0]}") from None
    except Exception as error:  # Keras raises a bare Exception when the download fails
        url = re.search(r"https?://\S+?\.h5", str(error))
        if weights != "imagenet" or url is None:
            raise
        name = url.group(0).rsplit("/", 1)[1]
        raise ToolkitError(
            f"ImageNet weights for {arch} could not be downloaded: put {name} in {keras_cache_dir()}/ "
            f"(or pass --weights PATH, or --weights none)"
        ) from None
    if weights not in ("imagenet", "none"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # Keras only warns when it skips layers that do not match
                backbone.load_weights(weights)
        except (ValueError, OSError, KeyError, UserWarning) as error:
            raise ToolkitError(f"weights file {weights} does not fit {arch}: {str(error).splitlines()[0]}") from None
    return backbone


def build_classifier(
    arch: str,
    input_size: int | None = None,
    weights: str = "imagenet",
    alpha: float = 1.0,
    dropout: float = 0.2,
    flexible: bool = False,
) -> keras.Model:
    """Raw RGB in, class probabilities out: normalise -> backbone -> global pooling -> dropout -> softmax.

    The model's input has one size; with ``flexible`` its layers also run at others (:func:`at_size`).
    """
    input_size = input_size or backbone_spec(arch).default_size
    backbone = build_backbone(arch, input_size, weights, alpha, flexible)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = normalisation_layer(arch)(inputs)
    x = backbone(x)  # the BatchNorm fix is in set_phase: a call-time training=False would not survive fit
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    head = keras.Sequential(
        [keras.layers.Dropout(dropout), keras.layers.Dense(len(CLASSES), activation="softmax", dtype="float32")],
        name="head",
    )
    return keras.Model(inputs, head(x), name=f"{arch}_lesions")


def backbone_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "head")


def at_size(model: keras.Model, size: int) -> keras.Model:
    """``model``'s own layers (weights shared) on ``size`` x ``size`` input: progressive resizing trains this one.

    Only for a model built with ``flexible=True``: a fixed-size backbone refuses other sizes.
    """
    inputs = keras.Input((size, size, 3), name="image")
    features = model.get_layer("pool")(backbone_of(model)(model.get_layer("normalise")(inputs)))
    return keras.Model(inputs, model.get_layer("head")(features), name=f"{model.name}_{size}px")


def boundary_index(backbone: keras.Model, arch: str, boundary: str | int) -> int:
    """Index of the first backbone layer that fine-tunes: a named boundary, or the last N layers."""
    if boundary == "all":
        return 0
    if isinstance(boundary, int) or str(boundary).isdigit():
        count = int(boundary)
        if not 0 < count <= len(backbone.layers):
            raise ToolkitError(f"fine-tune layer count {count} must be in 1..{len(backbone.layers)} for {arch}")
        return len(backbone.layers) - count
    check_boundary(arch, boundary)
    boundaries = backbone_spec(arch).boundaries
    return next(i for i, layer in enumerate(backbone.layers) if layer.name.startswith(boundaries[boundary]))


def set_phase(model: keras.Model, arch: str, phase: str, boundary: str | int, bn_fix: bool = True) -> None:
    """``head``: only the head trains. ``finetune``: the head and the backbone from the boundary on.

    With the BatchNorm fix, BatchNorm layers stay frozen in both phases. Recompile after calling this.
    """
    backbone = backbone_of(model)
    backbone.trainable = True
    start = boundary_index(backbone, arch, boundary) if phase == "finetune" else len(backbone.layers)
    for index, layer in enumerate(backbone.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = not bn_fix  # the original workaround left every BatchNorm trainable
        else:
            layer.trainable = index >= start


def predict(model: keras.Model, images: np.ndarray, desc: str = "predicting", batch_size: int = 64) -> np.ndarray:
    """``model`` over ``images`` in batches, with a progress bar; the same code on every backend."""
    starts = range(0, len(images), batch_size)
    batches = (np.asarray(model.predict_on_batch(images[i : i + batch_size])) for i in starts)
    return np.concatenate(list(tqdm(batches, total=len(starts), desc=desc, leave=False, disable=None)))
