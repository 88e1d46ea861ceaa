"""Augmented, balanced batches that feed ``model.fit`` on TensorFlow and on JAX alike."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from toolkit.base.errors import ToolkitError
from toolkit.data.augment import AugmentConfig, augment_image, mix_batch
from toolkit.data.balance import IMBALANCE_MODES, class_weights, fixed_sample_weights
from toolkit.data.images import load_images
from toolkit.data.pipeline import ImageBatches
from toolkit.data.readers import read_dataset

STILL = AugmentConfig(rotation=0, shift=0, zoom=0, horizontal_flip=False, vertical_flip=False, brightness=0, contrast=0)


@pytest.fixture(scope="module")
def cached(tmp_path_factory, ham_metadata):
    from conftest import make_ham_subset

    root = make_ham_subset(ham_metadata, tmp_path_factory.mktemp("ham"))
    table = read_dataset(root).table
    labels = table["label"].map(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"].index).to_numpy()
    return load_images(table["path"].tolist(), 48).images, labels


def test_no_augmentation_is_the_identity(cached):
    images, _ = cached
    assert np.array_equal(
        np.stack([augment_image(image, STILL, np.random.default_rng(0)) for image in images[:8]]), images[:8]
    )


def test_flips_only_give_one_of_the_four_flips(cached):
    image = cached[0][0]
    flips = {(fx, fy): image[:: -1 if fy else 1, :: -1 if fx else 1] for fx in (0, 1) for fy in (0, 1)}
    config = replace(STILL, horizontal_flip=True, vertical_flip=True)
    seen = set()
    for seed in range(20):
        out = augment_image(image, config, np.random.default_rng(seed))
        match = [key for key, flipped in flips.items() if np.array_equal(out, flipped)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == 4


def test_rotation_shift_zoom_move_pixels_and_colour_jitter_stays_in_range(cached):
    images, _ = cached
    out = np.stack([augment_image(image, AugmentConfig(), np.random.default_rng(1)) for image in images[:16]])
    assert out.shape == images[:16].shape and out.dtype == np.uint8
    assert all(not np.array_equal(a, b) for a, b in zip(out, images[:16], strict=True))
    bright = replace(STILL, brightness=0.2)
    shifts = [augment_image(images[0], bright, np.random.default_rng(s)).mean() - images[0].mean() for s in range(30)]
    assert max(np.abs(shifts)) <= 0.2 * 255 + 1 and np.std(shifts) > 5


def test_colour_gain_tints_each_channel_by_its_own_factor_within_range(cached):
    """A grey patch comes back tinted: each channel scaled by its own draw from [0.8, 1.2], not all by one."""
    grey = np.full((24, 32, 3), 100, np.uint8)
    tinted = replace(STILL, colour=0.2)
    gains = np.array([augment_image(grey, tinted, np.random.default_rng(s))[0, 0] / 100 for s in range(40)])
    assert gains.min() >= 0.8 - 0.01 and gains.max() <= 1.2 + 0.01
    assert np.ptp(gains, axis=1).mean() > 0.05  # the channels differ within an image


def test_process_slices_join_into_the_one_process_batch(cached):
    """Data-parallel: each process builds only its slice, augmented as the whole batch would be, and a short last
    batch is trimmed to a multiple of the device count (4)."""
    images, labels = cached
    kwargs = {"batch_size": 16, "shuffle": True, "augment": AugmentConfig(), "imbalance": "class_weight", "seed": 5}
    count = 16 * 2 + 6  # a last batch of 6, trimmed to 4
    whole = ImageBatches(images[:count], labels[:count], multiple_of=4, **kwargs)
    halves = [ImageBatches(images[:count], labels[:count], shard=(i, 2), multiple_of=4, **kwargs) for i in (0, 1)]
    assert len(whole) == 3 and whole[2][0].shape[0] == 4 and halves[1][2][0].shape[0] == 2
    for index in range(3):
        for part in range(3):  # images, targets, class weights
            joined = np.concatenate([half[index][part] for half in halves])
            assert np.array_equal(joined, whole[index][part]), (index, part)


def test_batches_are_shuffled_one_hot_and_deterministic(cached):
    images, labels = cached
    batches = ImageBatches(images, labels, batch_size=16, shuffle=True, augment=AugmentConfig(), seed=3)
    x, y = batches[0]
    assert x.shape == (16, 48, 48, 3) and x.dtype == np.uint8 and y.shape == (16, 7)
    assert np.array_equal(y.sum(axis=1), np.ones(16))
    again = ImageBatches(images, labels, batch_size=16, shuffle=True, augment=AugmentConfig(), seed=3)
    assert np.array_equal(again[0][0], x)
    epoch = [b[1].argmax(1) for b in batches.epoch_batches()]
    assert sorted(np.concatenate(epoch)) == sorted(labels)  # each image once per epoch
    assert not np.array_equal(batches[0][0], x)  # the next epoch draws anew


def test_class_weights_follow_scikit_learn(cached):
    images, labels = cached
    batches = ImageBatches(images, labels, batch_size=len(labels), imbalance="class_weight")
    _, y, weights = batches[0]
    expected = compute_class_weight("balanced", classes=np.arange(7), y=labels)
    assert np.allclose(weights, expected[y.argmax(1)])
    root = ImageBatches(images, labels, imbalance="class_weight", class_weight_power=0.5)
    assert np.allclose(root.weights, np.sqrt(expected))


def test_mixup_blends_images_targets_and_weights_by_the_same_amount():
    # seven flat images, one per class, each with its own grey level and class weight
    images = np.repeat(np.arange(7, dtype=np.uint8)[:, None, None, None] * 30, 4, axis=1).repeat(4, 2).repeat(3, 3)
    targets, weights = np.eye(7, dtype=np.float32), np.arange(1, 8, dtype=np.float32)
    mixed, blend, blended = mix_batch(images, targets, weights, 0.4, np.random.default_rng(2))
    assert mixed.dtype == np.float32 and np.allclose(blend.sum(axis=1), 1) and (blend.max(axis=1) < 0.99).any()
    for row in range(7):
        classes = np.flatnonzero(blend[row] > 1e-6)
        assert row in classes and len(classes) <= 2
        amounts = blend[row, classes]
        assert np.allclose(mixed[row], amounts @ (classes * 30.0), atol=1e-3)  # pixels blended as the targets
        assert np.isclose(blended[row], amounts @ weights[classes])  # and so is the class weight


def test_mixup_is_wired_into_the_batches_and_off_at_zero(cached):
    images, labels = cached
    kwargs = {"batch_size": 16, "shuffle": True, "augment": AugmentConfig(), "seed": 5}
    plain, mixed = ImageBatches(images, labels, **kwargs)[0], ImageBatches(images, labels, mixup=0.4, **kwargs)[0]
    assert mixed[0].dtype == np.float32 and not np.allclose(mixed[1].max(axis=1), 1)
    assert np.array_equal(ImageBatches(images, labels, mixup=0.4, **kwargs)[0][0], mixed[0])  # deterministic
    assert np.array_equal(ImageBatches(images, labels, mixup=0.0, **kwargs)[0][0], plain[0])  # 0 is off
    assert plain[0].dtype == np.uint8


def test_oversampling_draws_each_class_as_often_as_its_weight_counts_it():
    counts = np.array([10, 20, 40, 5, 40, 300, 8])
    labels = np.repeat(np.arange(7), counts)
    images = np.zeros((len(labels), 4, 4, 3), np.uint8)
    for power, expected in ((1.0, np.full(7, 1 / 7)), (0.5, np.sqrt(counts) / np.sqrt(counts).sum())):
        batches = ImageBatches(images, labels, batch_size=64, imbalance="oversample", class_weight_power=power)
        assert len(batches[0]) == 2 and np.array_equal(batches[0][1], batches[0][1])  # no weights; deterministic
        drawn = np.concatenate([batch[1].argmax(1) for epoch in range(20) for batch in batches.epoch_batches()])
        shares = np.bincount(drawn, minlength=7) / len(drawn)
        assert len(drawn) == 20 * len(labels) and np.allclose(shares, expected, atol=0.02), (power, shares)


@pytest.mark.parametrize("imbalance", IMBALANCE_MODES)
def test_a_fixed_array_takes_the_weights_oversampling_would_draw_by(imbalance):
    labels = np.repeat(np.arange(7), [10, 20, 40, 5, 40, 300, 8])
    weights = fixed_sample_weights(labels, imbalance, 0.75)
    if imbalance in ("class_weight", "oversample"):
        assert np.allclose(weights, class_weights(labels, 0.75)[labels]) and weights[labels == 3][0] > weights[-9]
    else:
        assert weights is None


def test_bad_arguments_are_refused(cached):
    images, labels = cached
    with pytest.raises(ToolkitError, match="unknown imbalance mode 'smote'"):
        ImageBatches(images, labels, imbalance="smote")
    with pytest.raises(ToolkitError, match="as many labels as images"):
        ImageBatches(images, labels[:-1])
    with pytest.raises(ToolkitError, match=r"mixup must be 0 \(off\) or a positive Beta parameter .* not -1"):
        ImageBatches(images, labels, mixup=-1)


FIT_SCRIPT = """
import numpy as np, keras
from toolkit.data.augment import AugmentConfig
from toolkit.data.pipeline import ImageBatches
rng = np.random.default_rng(0)
labels = np.arange(64) % 7
images = (rng.random((64, 32, 32, 3)) * 60 + labels[:, None, None, None] * 25).astype(np.uint8)
batches = ImageBatches(images, labels, batch_size=16, shuffle=True, augment=AugmentConfig(), imbalance="class_weight")
model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 127.5, -1),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7, activation="softmax")])
model.compile("adam", "categorical_crossentropy")
history = model.fit(batches, epochs=2, verbose=0)
assert np.isfinite(history.history["loss"]).all()
print(keras.backend.backend(), "ok")
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_fit_runs_on_both_keras_backends(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", FIT_SCRIPT], env=env, cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(f"{backend} ok")


@pytest.mark.parametrize(
    ("preset", "rotation", "zoom"), [("notebook", 10, 0.1), ("dermoscopy", 180, 0.2), ("dermoscopy_colour", 180, 0.2)]
)
def test_augmentation_presets_turn_and_zoom_as_far_as_readme_says(preset, rotation, zoom):
    """``dermoscopy`` turns a lesion any way (it has no up) and zooms 20%; ``notebook`` keeps ImageDataGenerator's
    10 degrees and 10%. Read off the affine matrix each image gets, flips left out."""
    from toolkit.data.augment import _affine_matrix

    config = replace(AugmentConfig.preset(preset), horizontal_flip=False, vertical_flip=False)
    rng = np.random.default_rng(0)
    matrices = [_affine_matrix(config, rng, 64, 48) for _ in range(400)]
    angles = np.array([np.degrees(np.arctan2(-m[0, 1], m[0, 0])) for m in matrices])
    scales = np.array([np.hypot(m[0, 0], m[0, 1]) for m in matrices])
    assert np.abs(angles).max() <= rotation + 1e-6 and np.abs(angles).max() > 0.9 * rotation
    assert scales.min() >= 1 - zoom - 1e-9 and scales.max() <= 1 + zoom + 1e-9
    assert scales.min() < 1 - 0.8 * zoom and scales.max() > 1 + 0.8 * zoom
