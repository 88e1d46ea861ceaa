"""The command line lists its subcommands; missing system libraries are named."""

from __future__ import annotations

import builtins
import re
import subprocess
import sys

import pytest

from toolkit.base.env import import_metadata_writers
from toolkit.base.errors import ToolkitError


def test_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True)
    listed = re.findall(r"^    ([a-z]+) ", result.stdout, flags=re.MULTILINE)
    assert result.returncode == 0
    assert listed == [
        "data",
        "train",
        "decide",
        "soup",
        "pack",
        "evaluate",
        "export",
        "drift",
        "bench",
        "predict",
        "preview",
    ]


def test_metadata_writers_import_here():
    assert hasattr(import_metadata_writers(), "image_classifier")


def test_missing_libusb_names_the_debian_package(monkeypatch):
    real_import = builtins.__import__

    def no_libusb(name, *args, **kwargs):
        if name.startswith("tensorflow_lite_support"):
            raise ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_libusb)
    with pytest.raises(ToolkitError, match=r"install the Debian package libusb-1\.0-0"):
        import_metadata_writers()
