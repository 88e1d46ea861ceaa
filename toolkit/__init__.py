"""Train skin-lesion classifiers and ship them into Flutter apps as TFLite bundles."""

__version__ = "0.1.0"
