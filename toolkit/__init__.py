"""Train skin-lesion classifiers and ship them into Flutter apps as TFLite bundles."""

import os

# TensorFlow logs several INFO lines on import; users see them on every command otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
