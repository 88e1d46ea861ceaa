"""Keras model -> .tflite bytes, with the quantization presets in one place.

Presets: ``float32`` (no quantization), ``float16`` (weights), ``dynamic`` (int8 weights, float
activations) and ``int8`` (full integer: every op int8, calibrated activations). Two back ends do
int8: TensorFlow's TFLiteConverter post-training quantization (``tflite``) and ``litert-quantizer``
(static int8 on the float .tflite, ``litert``).

For int8 with ``uint8`` or ``int8`` input, the input's quantization range is pinned to the full
byte range [0, 255] (scale 1), so the app feeds raw RGB bytes unchanged (shifted by 128 for int8)
and the normalisation inside the graph sees exactly the pixel values it was trained on.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter

import numpy as np

from toolkit.base.errors import ToolkitError
from toolkit.base.runtime import INPUT_NAME, OUTPUT_NAME, interpreter, quiet_native_logs
from toolkit.export.quantization import Quantization

# Ops that only convert between the float interface and the int8 graph, allowed with float32 I/O.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


def saved_model(model, input_size: int, folder: str) -> None:
    """A SavedModel with one named endpoint, batch 1: the tensor names the app and metadata will see."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[tf.TensorSpec((1, input_size, input_size, 3), tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(folder, verbose=False)


def pin_input_range(calibration: np.ndarray) -> np.ndarray:
    """A copy of the calibration images whose first image holds one 0 and one 255 pixel value.

    Calibration takes the input's range from the data; two pixels make it exactly [0, 255] so the
    uint8 input has scale 1 and zero point 0, and barely move any other layer's range.
    """
    pinned = calibration.copy()
    pinned[0, 0, 0, 0], pinned[0, 0, 1, 0] = 0, 255
    return pinned


def _tflite_converter(model, input_size: int, quantization: Quantization, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        saved_model(model, input_size, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        mode = quantization.mode if quantization.backend == "tflite" else "float32"
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            samples = pin_input_range(calibration).astype(np.float32)
            converter.representative_dataset = lambda: ([image[None]] for image in samples)
            int8_only = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.target_spec.supported_ops = int8_only + (
                [tf.lite.OpsSet.TFLITE_BUILTINS] if quantization.allow_float_ops else []
            )
            converter.inference_input_type = converter.inference_output_type = tf.as_dtype(quantization.io)
        try:
            with quiet_native_logs():
                return converter.convert()
        except Exception as error:  # the converter raises ConverterError and RuntimeError subclasses
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            hint = " (pass --allow-float-ops to keep such ops in float)" if mode == "int8" else ""
            raise ToolkitError(f"TFLite conversion ({mode}) failed: {reason}{hint}") from None


def prepared_for_int8(model, quantization: Quantization, calibration, float_tensors: tuple[str, ...] = ()):
    """The context a conversion runs in: int8 with bias correction corrects ``model`` for its duration.

    Layers producing ``float_tensors`` stay float, so they keep their weights as trained.
    """
    if quantization.mode != "int8" or not quantization.bias_correction:
        return contextlib.nullcontext(0)
    from toolkit.export.bias_correction import bias_corrected

    return bias_corrected(model, calibration, keep=float_tensors)


def convert(model, input_size: int, quantization: Quantization, calibration: np.ndarray | None = None) -> bytes:
    """The .tflite bytes of ``model`` (raw RGB in, probabilities out) quantized as asked."""
    if quantization.mode == "int8" and (calibration is None or not len(calibration)):
        raise ToolkitError("int8 quantization needs calibration images")
    with prepared_for_int8(model, quantization, calibration):
        converted = _tflite_converter(model, input_size, quantization, calibration)
    if quantization.mode == "int8" and quantization.backend == "litert":
        from toolkit.export.litert import quantize_int8

        converted = quantize_int8(converted, pin_input_range(calibration))
    if quantization.mode == "int8":
        check_integer_only(converted, quantization)
    return converted


def float_ops(model: bytes) -> list[tuple[str, str]]:
    """Ops that compute in float (a float32 tensor among their inputs or outputs), with that tensor's name."""
    runner = interpreter(model, xnnpack=False)
    tensors = {t["index"]: t for t in runner.get_tensor_details()}
    found = []
    for op in runner._get_ops_details():
        indices = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        floating = [tensors[i]["name"] for i in indices if tensors[i]["dtype"] == np.float32]
        if floating:
            found.append((op["op_name"], floating[0].split(";")[0]))  # fused names list every folded op
    return found


def check_integer_only(model: bytes, quantization: Quantization) -> None:
    """Raise naming the ops that stayed float, unless they are allowed."""
    found = float_ops(model)
    if quantization.io == "float32":  # the interface itself is float: its (de)quantize ops are expected
        found = [(op, tensor) for op, tensor in found if op not in BOUNDARY_OPS]
    if found and not quantization.allow_float_ops:
        kinds = ", ".join(f"{op} x{count}" for op, count in Counter(op for op, _ in found).most_common())
        raise ToolkitError(
            f"int8 export is not integer-only: {len(found)} op(s) stayed float ({kinds}; first: "
            f"{found[0][0]} on {found[0][1]}); pass --allow-float-ops to accept them"
        )
