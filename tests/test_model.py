"""Backbones, the fine-tune boundary, and the BatchNorm fix against the original failure."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from toolkit.base.errors import ToolkitError
from toolkit.model.backbones import BACKBONES
from toolkit.model.classifier import backbone_of, build_classifier, normalisation_layer, set_phase

SIZE = 32


def _batch_norms(model):
    return [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]


def _moving_stats(model):
    return [np.array(w) for layer in _batch_norms(model) for w in (layer.moving_mean, layer.moving_variance)]


def _fit_once(model, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (16, SIZE, SIZE, 3)).astype("float32")
    targets = np.eye(7, dtype="float32")[rng.integers(0, 7, 16)]
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    model.fit(images, targets, epochs=1, batch_size=8, verbose=0)
    return images


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_every_backbone_builds_and_normalises_like_keras_applications(arch):
    model = build_classifier(arch, SIZE, weights="none", alpha=0.35 if arch == "mobilenet_v2" else 1.0)
    assert model.output_shape == (None, 7)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    module = keras.applications.mobilenet_v2 if arch == "mobilenet_v2" else keras.applications.densenet
    expected = module.preprocess_input(pixels.copy())
    assert np.allclose(keras.ops.convert_to_numpy(normalisation_layer(arch)(pixels)), expected, atol=1e-5)


def test_batchnorm_fix_keeps_moving_statistics_and_one_normalisation():
    model = build_classifier("mobilenet_v2", SIZE, weights="none", alpha=0.35)
    backbone = backbone_of(model)
    set_phase(model, "mobilenet_v2", "finetune", "block_13")
    before = _moving_stats(model)
    images = _fit_once(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, _moving_stats(model), strict=True))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(images)
    trained_mode = keras.ops.convert_to_numpy(backbone(x, training=True))
    inference_mode = keras.ops.convert_to_numpy(backbone(x, training=False))
    assert np.allclose(trained_mode, inference_mode, atol=1e-6)


def test_without_the_fix_the_original_failure_comes_back():
    model = build_classifier("mobilenet_v2", SIZE, weights="none", alpha=0.35)
    backbone = backbone_of(model)
    set_phase(model, "mobilenet_v2", "head", "block_13", bn_fix=False)  # convolutions frozen, BN trainable
    assert not any(
        w.trainable for layer in backbone.layers if not _batch_norms(model).count(layer) for w in layer.weights
    )
    before = _moving_stats(model)
    images = _fit_once(model)
    drift = max(float(np.abs(a - b).max()) for a, b in zip(before, _moving_stats(model), strict=True))
    assert drift > 1e-3  # moving statistics moved away from the pretrained ones
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(images)
    trained_mode = keras.ops.convert_to_numpy(backbone(x, training=True))
    inference_mode = keras.ops.convert_to_numpy(backbone(x, training=False))
    assert not np.allclose(trained_mode, inference_mode, atol=1e-3)  # batch statistics != moving statistics


def test_phases_change_what_they_should_and_nothing_else():
    model = build_classifier("mobilenet_v2", SIZE, weights="none", alpha=0.35)
    backbone = backbone_of(model)
    start = next(i for i, layer in enumerate(backbone.layers) if layer.name.startswith("block_13_"))
    snapshot = lambda layers: [np.array(w) for layer in layers for w in layer.weights]  # noqa: E731
    set_phase(model, "mobilenet_v2", "head", "block_13")
    backbone_before, head_before = snapshot(backbone.layers), snapshot([model.get_layer("head")])
    _fit_once(model)
    assert all(np.array_equal(a, b) for a, b in zip(backbone_before, snapshot(backbone.layers), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(head_before, snapshot([model.get_layer("head")]), strict=True))
    set_phase(model, "mobilenet_v2", "finetune", "block_13")
    frozen_before, tuned_before = snapshot(backbone.layers[:start]), snapshot(backbone.layers[start:])
    _fit_once(model, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, snapshot(backbone.layers[:start]), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(tuned_before, snapshot(backbone.layers[start:]), strict=True))


def test_boundary_by_layer_count():
    model = build_classifier("mobilenet_v2", SIZE, weights="none", alpha=0.35)
    layers = backbone_of(model).layers
    for count in (1, 10, len(layers)):
        set_phase(model, "mobilenet_v2", "finetune", str(count))
        assert not any(layer.trainable for layer in layers[: len(layers) - count])
        assert all(layer.trainable != _is_norm(layer) for layer in layers[len(layers) - count :])
        tuned = sum(len(layer.trainable_weights) for layer in layers)
        assert len(backbone_of(model).trainable_weights) == tuned  # the backbone reports what trains in it
    assert tuned > 0  # the whole backbone, last
    for count in (0, len(layers) + 1):
        with pytest.raises(ToolkitError) as error:
            set_phase(model, "mobilenet_v2", "finetune", str(count))
        assert str(error.value) == f"fine-tune layer count {count} must be in 1..{len(layers)} for mobilenet_v2"
    with pytest.raises(ToolkitError) as error:
        set_phase(model, "mobilenet_v2", "finetune", "block_99")
    assert str(error.value) == (
        "unknown fine-tune boundary 'block_99' for mobilenet_v2; "
        "expected one of block_3, block_13, block_16, all, or a layer count"
    )
    set_phase(model, "mobilenet_v2", "finetune", "all")
    norms = [isinstance(layer, keras.layers.BatchNormalization) for layer in backbone_of(model).layers]
    assert [layer.trainable for layer in backbone_of(model).layers] == [not norm for norm in norms]


@pytest.mark.parametrize(
    ("arch", "boundary", "first_tuned"),
    [("mobilenet_v2", "block_3", "block_3_expand"), ("mobilenet_v2", "block_13", "block_13_expand"),
     ("mobilenet_v2", "block_16", "block_16_expand"),
     ("densenet121", "conv5", "conv5_block1_0_bn"), ("densenet201", "conv5", "conv5_block1_0_bn")],
)  # fmt: skip
def test_named_boundaries_fine_tune_from_their_block(arch, boundary, first_tuned):
    model = build_classifier(arch, SIZE, weights="none", alpha=0.35 if arch == "mobilenet_v2" else 1.0)
    set_phase(model, arch, "finetune", boundary)
    layers = backbone_of(model).layers
    start = [layer.name for layer in layers].index(first_tuned)
    assert start > 0 and not any(layer.trainable for layer in layers[:start])
    assert all(layer.trainable != _is_norm(layer) for layer in layers[start:])  # BatchNorm stays frozen


def _is_norm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def test_bad_backbone_arguments(tmp_path, monkeypatch):
    with pytest.raises(ToolkitError, match="unknown architecture 'resnet'; expected one of"):
        build_classifier("resnet", SIZE, weights="none")
    with pytest.raises(ToolkitError, match=r"received alpha=0\.6"):
        build_classifier("mobilenet_v2", SIZE, weights="none", alpha=0.6)
    with pytest.raises(ToolkitError, match="cannot take input size 16"):
        build_classifier("mobilenet_v2", 16, weights="none", alpha=0.35)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    with pytest.raises(
        ToolkitError, match=r"put mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0\.35_96_no_top\.h5 in"
    ):
        build_classifier("mobilenet_v2", 96, weights="imagenet", alpha=0.35)
    other = build_classifier("densenet121", SIZE, weights="none")
    backbone_of(other).save_weights(tmp_path / "densenet.weights.h5")
    with pytest.raises(ToolkitError, match="does not fit mobilenet_v2"):
        build_classifier("mobilenet_v2", SIZE, weights=str(tmp_path / "densenet.weights.h5"), alpha=0.35)


def test_imagenet_weights_load_offline_from_the_keras_cache(tmp_path, monkeypatch):
    from conftest import WEIGHTS

    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / name).symlink_to(WEIGHTS / name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    pretrained = backbone_of(build_classifier("mobilenet_v2", 224, weights="imagenet"))
    random = backbone_of(build_classifier("mobilenet_v2", 224, weights="none"))
    first_bn = "bn_Conv1"
    assert not np.allclose(pretrained.get_layer(first_bn).moving_mean, random.get_layer(first_bn).moving_mean)


def test_mirror_views_average_the_mirror_images_logits_with_the_same_weights(tmp_path):
    from toolkit.model.views import view_count, with_views

    model = build_classifier("mobilenet_v2", SIZE, weights="none", alpha=0.35)
    images = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    logits = [np.log(model.predict(view, verbose=0)) for view in (images, images[:, :, ::-1])]
    two = with_views(model, 2)
    mean = np.mean(logits, axis=0)
    expected = np.exp(mean) / np.exp(mean).sum(axis=1, keepdims=True)
    assert np.allclose(two.predict(images, verbose=0), expected, atol=1e-5)
    assert {id(w) for w in two.weights} == {id(w) for w in model.weights}  # a wrapper: nothing retrained or copied
    four = with_views(model, 4)
    answers = [four.predict(np.ascontiguousarray(view), verbose=0) for view in (images, images[:, ::-1, ::-1])]
    assert np.allclose(*answers, atol=1e-5)  # its mirrors are the same four views
    four.save(tmp_path / "four.keras")
    loaded = keras.saving.load_model(tmp_path / "four.keras")
    assert view_count(loaded) == 4 and np.allclose(loaded.predict(images, verbose=0), answers[0], atol=1e-6)
    assert with_views(four, 4) is four
    with pytest.raises(ToolkitError, match="already averages 4 views"):
        with_views(four, 2)
    with pytest.raises(ToolkitError, match="views must be one of 1, 2, 4, not 3"):
        with_views(model, 3)
