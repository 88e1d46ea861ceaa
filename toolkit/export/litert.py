"""Static full-integer int8 with ``litert-quantizer`` on a float .tflite (the ``litert`` back end).

It writes int8 input and output directly (no quantize/dequantize ops at the boundaries): with the
input range pinned to [0, 255] the input has scale 1 and zero point -128, so an app feeds raw
bytes minus 128. Two settings differ from the library's defaults, each measured on our models:

- activation ranges are the global min/max over the calibration images, as TFLiteConverter takes
  them, instead of a moving average;
- a symmetric weight range is at least 1e-3. MobileNetV2 has channels whose weights are all but
  zero (Conv1 has seven with max |w| near 1e-20); the quantizer gives them a tiny scale, their
  bias divided by in_scale * w_scale overflows int32 and wraps to INT32_MIN ("invalid value
  encountered in cast"). On the demo model that cost 12 points of accuracy; with the floor, such
  channels' int8 weights are still 0 and their bias is right.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np

from toolkit.base.errors import ToolkitError

WEIGHT_RANGE_FLOOR = 1e-3


@contextlib.contextmanager
def _weight_range_floor(floor: float) -> Iterator[None]:
    from litert_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor

    original = uniform_quantize_tensor.tensor_zp_scale_from_min_max

    def floored(min_value, max_value, num_bits, symmetric, *args, **kwargs):
        if symmetric and num_bits == 8:
            bound = np.maximum(np.maximum(np.abs(min_value), np.abs(max_value)), floor)
            min_value, max_value = -bound, bound
        return original(min_value, max_value, num_bits, symmetric, *args, **kwargs)

    uniform_quantize_tensor.tensor_zp_scale_from_min_max = floored
    try:
        yield
    finally:
        uniform_quantize_tensor.tensor_zp_scale_from_min_max = original


def quantize_int8(float_model: bytes, calibration: np.ndarray, threads: int = 2) -> bytes:
    """A full-integer int8 model, int8 in and out (``Quantization`` refuses other I/O), from a float .tflite."""
    try:
        from litert_quantizer import calibrator, quantizer, recipe
        from litert_quantizer.utils import qsv_utils
    except ImportError:
        raise ToolkitError("litert-quantizer is not installed: pip install litert-quantizer") from None
    from toolkit.base.runtime import INPUT_NAME, quiet_native_logs

    buffer = bytearray(float_model)
    engine = quantizer.Quantizer(buffer)
    engine.load_quantization_recipe(recipe.static_wi8_ai8())
    samples = np.asarray(calibration, dtype=np.float32)
    data = {"serving_default": [{INPUT_NAME: samples[i : i + 1]} for i in range(len(samples))]}
    with warnings.catch_warnings(), quiet_native_logs():
        warnings.simplefilter("ignore")  # a notice about preserving tensors, repeated per sample
        ranges = calibrator.Calibrator(buffer, num_threads=threads, qsv_update_func=qsv_utils.min_max_update)
        ranges.calibrate(data, engine._recipe_manager)  # what Quantizer.calibrate does, with min/max ranges
        with _weight_range_floor(WEIGHT_RANGE_FLOOR):
            result = engine.quantize(ranges.get_model_qsvs(), enable_progress_report=False)
    return inline_buffers(bytes(result.quantized_model))


def inline_buffers(model: bytes) -> bytes:
    """The same model with every weight buffer inside the flatbuffer.

    litert-quantizer stores weights after the flatbuffer (offset and size); tflite-support's
    metadata writer re-serialises with an older schema that does not know those fields and would
    silently drop every weight.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    for buffer in graph.buffers:
        if buffer.offset > 1:  # 0 and 1 mean "no external data"
            buffer.data = np.frombuffer(model, np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = buffer.size = 0
    return bytes(flatbuffer_utils.convert_object_to_bytearray(graph))
