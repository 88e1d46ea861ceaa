"""Checks for the parts of the stack that pip cannot install, with errors that name the fix."""

from __future__ import annotations

import sys

from toolkit.base.errors import EXIT_BAD_INPUT, ToolkitError

LIBUSB_PACKAGE = "libusb-1.0-0"


def import_metadata_writers():
    """Import tflite-support's metadata writers, naming the Debian package its native module needs."""
    try:
        from tensorflow_lite_support.metadata.python import metadata_writers
        from tensorflow_lite_support.metadata.python.metadata_writers import (  # noqa: F401 - loads the submodules
            image_classifier,
            metadata_info,
            writer_utils,
        )
    except ImportError as error:
        if "libusb" in str(error):
            raise ToolkitError(
                f"tflite-support needs the system library libusb-1.0: install the Debian package "
                f"{LIBUSB_PACKAGE} (apt-get install {LIBUSB_PACKAGE})"
            ) from error
        raise ToolkitError(
            "tflite-support is not installed: pip install --no-deps tflite-support==0.4.4 (or make install)"
        ) from error
    return metadata_writers


if __name__ == "__main__":
    try:
        import_metadata_writers()
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    print("environment ok: tflite-support metadata writers import")
