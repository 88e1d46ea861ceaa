"""Which layers int8 hurts most, and an int8 model with those layers left in float.

Both use TensorFlow's quantization debugger: it runs the float and the quantized model side by
side on a few images and measures each quantized tensor's error. RMSE divided by the tensor's
quantization step is the measure: near 0.3 is rounding noise; far above 1 a layer loses signal.
"""

from __future__ import annotations

import contextlib
import csv
import io
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np

from toolkit.base.errors import ToolkitError
from toolkit.base.runtime import quiet_native_logs
from toolkit.export.convert import pin_input_range, prepared_for_int8, saved_model
from toolkit.export.quantization import Quantization


@contextlib.contextmanager
def _quiet_debugger() -> Iterator[None]:
    """The debugger builds ``tf.lite.Interpreter`` itself (it has no LiteRT path): its deprecation notice is not
    the user's to act on."""
    with warnings.catch_warnings(), quiet_native_logs():
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated")
        yield


def _debugger(model, input_size: int, quantization: Quantization, calibration, images, folder: str, keep=()):
    import tensorflow as tf

    with prepared_for_int8(model, quantization, calibration, keep):  # the weights the bundle will hold
        saved_model(model, input_size, folder)
    converter = tf.lite.TFLiteConverter.from_saved_model(folder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = pin_input_range(calibration).astype(np.float32)
    converter.representative_dataset = lambda: ([image[None]] for image in samples)
    debug_images = images.astype(np.float32)
    with _quiet_debugger():
        return tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([image[None]] for image in debug_images)
        )


def layer_errors(
    model, input_size: int, quantization: Quantization, calibration: np.ndarray, images: np.ndarray, top: int = 10
) -> list[dict[str, float | str]]:
    """The ``top`` quantized tensors with the largest RMSE / scale on ``images``, worst first.

    With bias correction the float side is the corrected model too, so this ranks what the correction leaves.
    """
    with tempfile.TemporaryDirectory() as folder:
        debugger = _debugger(model, input_size, quantization, calibration, images, folder)
        with _quiet_debugger():
            debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    rows = list(csv.DictReader(io.StringIO(dump.getvalue())))
    layers = [
        {
            "op": row["op_name"],
            "tensor": row["tensor_name"],  # the full fused name: what the quantizer's denylist matches
            "rmse_over_scale": float(np.sqrt(float(row["mean_squared_error"])) / float(row["scale"])),
        }
        for row in rows
        if float(row["scale"]) > 0
    ]
    return sorted(layers, key=lambda layer: -layer["rmse_over_scale"])[:top]


def convert_selective(
    model, input_size: int, quantization: Quantization, calibration: np.ndarray, float_tensors: tuple[str, ...]
) -> bytes:
    """Int8 except the ops producing ``float_tensors``, which stay float, with the interface dtype asked for.

    The quantizer honours the list only with a float interface (with ``fully_quantize`` it silently
    ignores it, measured), so the interface is converted to ``quantization.io`` afterwards.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert, util

    if quantization.mode != "int8" or quantization.backend != "tflite":
        raise ToolkitError("--selective works on int8 exports with the tflite quantizer")
    with tempfile.TemporaryDirectory() as folder:
        debugger = _debugger(model, input_size, quantization, calibration, calibration[:1], folder, float_tensors)
        with quiet_native_logs():
            selective = convert.mlir_quantize(debugger.calibrated_model, denylisted_nodes=list(float_tensors))
    if quantization.io == "float32":
        return selective
    io_type = tf.as_dtype(quantization.io)
    return bytes(util.modify_model_io_type(selective, io_type, io_type))
