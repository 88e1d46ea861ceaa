"""TensorFlow loaded without the native log lines its import prints, unless ``--verbose`` asks for them.

The lines come from native code during the import ("oneDNN custom operations are on", "All log messages
before absl::InitializeLog() ..."), which ``TF_CPP_MIN_LOG_LEVEL`` no longer hides in TF 2.21, so the
import runs with the process's stderr silenced. Commands call this after their arguments are checked,
so a bad argument is refused before TensorFlow's seconds of loading.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings


def load_tensorflow(args: argparse.Namespace, keras_only: bool = True) -> None:
    """Load TensorFlow now, quietly, if the command will: always for ``keras_only=False`` (the converter),
    else only under Keras's TensorFlow backend (JAX runs Keras models without it)."""
    if args.verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r"`input_shape` is undefined or non-square")  # 176 px: 224's weights
    if not keras_only or os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        from toolkit.base.runtime import quiet_native_logs

        with quiet_native_logs():
            import tensorflow  # noqa: F401
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices are not the user's concern
