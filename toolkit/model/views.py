"""Mirror views averaged inside the classifier: one image in, the mean of its mirror images' logits out.

A lesion has no left or right, and training draws both flips, so the mirrors are as valid a look at
it as the image itself. Each view's int8 rounding errs differently, so their mean errs less: the
views are there for int8 fidelity, bought with latency (the backbone runs once per view, as one
batch), at the same size. The pooled features are averaged, so the head sees one row and the
decision rule still folds into its last layer.
"""

from __future__ import annotations

import keras

from toolkit.base.errors import ToolkitError
from toolkit.model.backbones import check_views
from toolkit.model.classifier import backbone_of


class _ViewLayer(keras.layers.Layer):
    """A layer that knows how many views the batch carries; its output keeps the input's per-row shape."""

    def __init__(self, views: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.views = views

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])

    def get_config(self) -> dict:
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="toolkit")
class MirrorViews(_ViewLayer):
    """A batch of images followed by its mirror images along the batch axis: view-major."""

    def call(self, images):
        mirrored = keras.ops.flip(images, axis=2)
        stacked = [images, mirrored]
        if self.views == 4:
            stacked += [keras.ops.flip(images, axis=1), keras.ops.flip(mirrored, axis=1)]
        return keras.ops.concatenate(stacked, axis=0)


@keras.saving.register_keras_serializable(package="toolkit")
class ViewMean(_ViewLayer):
    """The mean over the views of :class:`MirrorViews`' batch: one row per image again."""

    def call(self, features):
        return keras.ops.mean(keras.ops.reshape(features, (self.views, -1, features.shape[-1])), axis=0)


def view_count(model: keras.Model) -> int:
    """How many views ``model`` averages: 1 for a plain classifier."""
    return next((layer.views for layer in model.layers if isinstance(layer, MirrorViews)), 1)


def with_views(model: keras.Model, views: int) -> keras.Model:
    """``model``'s own layers (weights shared) with ``views`` mirror views averaged before the head.

    2 views: the image and its left-right mirror; 4: also its up-down mirror and both at once.
    """
    check_views(views)
    if view_count(model) == views:
        return model
    if view_count(model) != 1:
        raise ToolkitError(f"the model already averages {view_count(model)} views; start from the run without them")
    inputs = keras.Input(model.input.shape[1:], name="image")
    x = MirrorViews(views, name="views")(model.get_layer("normalise")(inputs))
    x = ViewMean(views, name="view_mean")(model.get_layer("pool")(backbone_of(model)(x)))
    return keras.Model(inputs, model.get_layer("head")(x), name=model.name)
