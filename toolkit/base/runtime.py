"""The TFLite runtime as every stage uses it: one way to load an interpreter, the bundle's tensor names,
byte quantization at the model's edges, and which device trains (for the record)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator

import numpy as np

from toolkit.base.errors import ToolkitError

INPUT_NAME, OUTPUT_NAME = "image", "probabilities"  # the tensor names the app and the metadata see


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Send what native code writes to stderr (converter and delegate log lines) to /dev/null; errors still raise."""
    with open(os.devnull, "w") as null, contextlib.ExitStack() as stack:
        saved = os.dup(2)
        stack.callback(os.close, saved)
        stack.callback(os.dup2, saved, 2)
        os.dup2(null.fileno(), 2)
        yield


def interpreter(model: bytes | str, threads: int | None = None, xnnpack: bool = True):
    """An allocated ``ai_edge_litert`` interpreter; without XNNPACK the graph's own ops stay visible."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    source = {"model_content": model} if isinstance(model, bytes | bytearray) else {"model_path": str(model)}
    try:
        with quiet_native_logs():
            runner = Interpreter(**source, num_threads=threads, experimental_op_resolver_type=resolver)
            runner.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        where = "" if isinstance(model, bytes | bytearray) else f" {model}"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ToolkitError(f"not a TFLite model the interpreter can load{where}: {reason}") from None
    return runner


def timed_invoke(runner, inputs: np.ndarray) -> float:
    """One inference of ``runner`` on ``inputs``, in milliseconds; setting the input is not timed.

    The one timing harness: ``bench`` times every run with it, and the gate's latency note too.
    """
    runner.set_tensor(runner.get_input_details()[0]["index"], inputs)
    start = time.perf_counter()
    runner.invoke()
    return (time.perf_counter() - start) * 1000


def quantize_input(images: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """uint8 RGB images as the model's input dtype (raw bytes for uint8; shifted by 128 for int8)."""
    if dtype == "float32":
        return images.astype(np.float32)
    quantized = np.round(images.astype(np.float32) / scale) + zero_point
    info = np.iinfo(dtype)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize_output(values: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    return values.astype(np.float32) if dtype == "float32" else (values.astype(np.float32) - zero_point) * scale


def training_device() -> str:
    """Which device trains under the current Keras backend, in words, for the record."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"gpu: {gpus[0].name}" if gpus else f"cpu: {platform.processor() or platform.machine()}"
