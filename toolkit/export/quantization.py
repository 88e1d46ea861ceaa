"""The quantization presets, the app-facing dtypes and the int8 back ends, in one place.

Kept free of TensorFlow so that the CLI offers these as choices without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.base.errors import ToolkitError

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
IO_TYPES = ("uint8", "int8", "float32")
BACKENDS = ("tflite", "litert")


@dataclass(frozen=True)
class Quantization:
    """What to produce: the preset, the interface dtype of int8 models and the int8 back end."""

    mode: str = "int8"
    io: str = ""  # int8 only: the input and output dtype the app sees; "": uint8 (tflite), int8 (litert)
    backend: str = "tflite"
    allow_float_ops: bool = False
    bias_correction: bool = True  # int8 only: cancel the kernels' rounding shift (toolkit.export.bias_correction)

    def __post_init__(self) -> None:
        """Refuse a combination that cannot be honoured, before any conversion starts."""
        for value, allowed, what in ((self.mode, QUANTIZATIONS, "quantization"), (self.backend, BACKENDS, "quantizer")):
            if value not in allowed:
                raise ToolkitError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
        if self.mode != "int8":
            if self.io:
                raise ToolkitError(
                    f"--io {self.io} applies to int8 only ({self.mode} models take and give float32): "
                    "drop --io, or pass --quantize int8"
                )
            return
        if not self.io:
            object.__setattr__(self, "io", "int8" if self.backend == "litert" else "uint8")
        if self.io not in IO_TYPES:
            raise ToolkitError(f"unknown --io {self.io!r}; expected one of {', '.join(IO_TYPES)}")
        if self.backend == "litert" and self.io != "int8":
            raise ToolkitError(
                f"the litert quantizer writes int8 input and output, not {self.io}: "
                "pass --io int8 with --quantizer litert"
            )

    @property
    def io_dtype(self) -> str:
        return self.io if self.mode == "int8" else "float32"
