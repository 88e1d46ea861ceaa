"""An exported bundle as an app sees it: ``manifest.json``, ``labels.txt`` and ``model.tflite``.

Everything here follows the manifest, never the training run: resize as it says, feed bytes of the
input dtype, dequantise the output with its scale and zero point. ``predict``, ``drift`` and
``bench`` all run models through this one path, which is also the path the contract test and
``lesion_classifier.dart`` spell out step by step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.base.errors import ToolkitError
from toolkit.base.runtime import dequantize_output, interpreter, quantize_input
from toolkit.data.images import RESIZE_MODES, decode_image, load_images, resize_image
from toolkit.export.verify import REEXPORT, check_files, check_labels, check_manifest, check_tensor

MANIFEST, LABELS, MODEL = "manifest.json", "labels.txt", "model.tflite"
SCHEMA_VERSION = 1
NOT_A_DEVICE = "Not a medical device: research and demonstration use only, not for diagnosis."


@dataclass
class Bundle:
    """A bundle folder, checked: the manifest, labels and model agree with each other."""

    path: Path
    manifest: dict
    labels: list[str]

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        path = Path(path)
        if not path.is_dir():
            raise ToolkitError(f"bundle folder not found: {path}")
        for name in (MANIFEST, LABELS, MODEL):
            if not (path / name).is_file():
                raise ToolkitError(f"no {name} in bundle {path}: export one with `python -m toolkit export`")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except ValueError as error:  # not JSON, or not even text
            raise ToolkitError(f"cannot parse {path / MANIFEST}: {error}: {REEXPORT}") from None
        if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
            version = manifest.get("schema_version") if isinstance(manifest, dict) else None
            raise ToolkitError(
                f"{path / MANIFEST} has schema version {version!r}; this toolkit reads version {SCHEMA_VERSION}"
            )
        check_manifest(manifest, path / MANIFEST, RESIZE_MODES)
        check_files(path, manifest, MANIFEST)
        try:
            labels = (path / LABELS).read_text().splitlines()
        except UnicodeDecodeError:
            raise ToolkitError(f"{path / LABELS} is not text: {REEXPORT}") from None
        where = {"manifest": path / MANIFEST, "labels": path / LABELS, "model": path / MODEL}
        check_labels(labels, manifest, (path / MODEL).read_bytes(), where)
        outputs = manifest["output"]["shape"][-1]
        if len(labels) != outputs:
            raise ToolkitError(f"{path / LABELS} has {len(labels)} labels but the model has {outputs} outputs")
        return cls(path=path, manifest=manifest, labels=labels)

    @property
    def input_size(self) -> int:
        return int(self.manifest["input"]["shape"][1])

    @property
    def is_demo(self) -> bool:
        """Trained on the synthetic demo set: its answers on real lesions mean nothing."""
        return (
            bool(self.manifest.get("training_data", {}).get("demo"))
            or self.manifest.get("source", {}).get("data") == "demo"
        )

    def demo_warning(self) -> str | None:
        if not self.is_demo:
            return None
        return (
            f"warning: {self.path.name} was trained on the synthetic DEMO set, not dermoscopy: "
            "its answers on real images mean nothing"
        )

    def operating_points(self) -> tuple[str, list]:
        """The referral operating points of the manifest (default name, points); none for older bundles."""
        from toolkit.base.referral import from_dict

        referral = self.manifest.get("referral") or {}
        return referral.get("default", ""), [from_dict(point) for point in referral.get("points", [])]

    @property
    def resize_mode(self) -> str:
        return self.manifest["preprocessing"]["resize_mode"]

    def load(self, paths: list[str], desc: str = "loading images") -> np.ndarray:
        """Decode and resize image files exactly as the manifest says, as uint8 RGB."""
        return load_images(paths, self.input_size, self.resize_mode, desc=desc).images

    def preprocess(self, path: str | Path) -> np.ndarray:
        return resize_image(decode_image(path), self.input_size, self.resize_mode)

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB images (already resized) as the model's input tensor, per the manifest."""
        spec = self.manifest["input"]
        return quantize_input(images, spec["dtype"], spec["scale"], spec["zero_point"])

    def from_output(self, raw: np.ndarray) -> np.ndarray:
        """The model's raw output values as probabilities, per the manifest."""
        spec = self.manifest["output"]
        return dequantize_output(raw, spec["dtype"], spec["scale"], spec["zero_point"])

    def interpreter(self, threads: int | None = None, xnnpack: bool = True):
        """The model's interpreter, its tensors checked against the manifest first."""
        runner = interpreter(str(self.path / MODEL), threads=threads, xnnpack=xnnpack)
        where = {"manifest": self.path / MANIFEST, "model": self.path / MODEL}
        check_tensor(runner.get_input_details()[0], self.manifest["input"], "input", where)
        check_tensor(runner.get_output_details()[0], self.manifest["output"], "output", where)
        return runner

    def predict(self, images: np.ndarray, threads: int | None = None, desc: str = "running the bundle") -> np.ndarray:
        """Class probabilities for uint8 RGB images already resized as the manifest says."""
        from tqdm.auto import tqdm

        runner = self.interpreter(threads)
        index_in, index_out = runner.get_input_details()[0]["index"], runner.get_output_details()[0]["index"]
        probs = np.empty((len(images), len(self.labels)), np.float32)
        for i, image in enumerate(tqdm(images, desc=desc, unit="img", leave=False, disable=None)):
            runner.set_tensor(index_in, self.to_input(image[None]))
            runner.invoke()
            probs[i] = self.from_output(runner.get_tensor(index_out)[0])
        return probs
