"""TFLite metadata: written with tflite-support's image-classifier writer, then read back and checked.

The metadata is what MediaPipe's ImageClassifier and the TFLite Task libraries read in an app: the
input as an RGB image with its normalisation, the output with the labels attached as
``TENSOR_AXIS_LABELS``, and the value ranges. The model normalises inside its graph, so the
normalisation written here is the identity (mean 0, std 1): apps feed pixel values in [0, 255].
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.base.env import import_metadata_writers
from toolkit.base.errors import ToolkitError

NORM_MEAN, NORM_STD = [0.0], [1.0]


@dataclass(frozen=True)
class ModelInfo:
    """The general metadata: who made the model, what it is and under which licence."""

    name: str
    description: str
    version: str
    author: str
    licence: str


def write_metadata(model: bytes, info: ModelInfo, labels: list[str]) -> bytes:
    """``model`` with the metadata and the label file packed into it."""
    writers = import_metadata_writers()
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema

    metadata_info, writer_utils = writers.metadata_info, writers.writer_utils
    buffer = bytearray(model)
    with tempfile.TemporaryDirectory() as folder:
        label_file = Path(folder) / "labels.txt"
        label_file.write_text("\n".join(labels) + "\n")
        writer = writers.image_classifier.MetadataWriter.create_from_metadata_info(
            buffer,
            general_md=metadata_info.GeneralMd(
                name=info.name,
                version=info.version,
                description=info.description,
                author=info.author,
                licenses=info.licence,
            ),
            input_md=metadata_info.InputImageTensorMd(
                name="image",
                description="RGB image, values 0-255, resized as manifest.json says; normalised inside the model",
                norm_mean=NORM_MEAN,
                norm_std=NORM_STD,
                color_space_type=schema.ColorSpaceType.RGB,
                tensor_type=writer_utils.get_input_tensor_types(buffer)[0],
            ),
            output_md=metadata_info.ClassificationTensorMd(
                name="probabilities",
                description="Probability of each lesion class, in the order of the attached labels.txt",
                label_files=[metadata_info.LabelFileMd(str(label_file))],
                tensor_type=writer_utils.get_output_tensor_types(buffer)[0],
            ),
        )
        return bytes(writer.populate())


def read_metadata(model: bytes) -> tuple[dict, dict[str, bytes]]:
    """The metadata as JSON and the packed files by name; raises if the model carries none."""
    import_metadata_writers()  # the same native module: the same clear error if libusb is missing
    from tensorflow_lite_support.metadata.python import metadata

    try:
        displayer = metadata.MetadataDisplayer.with_model_buffer(model)
    except ValueError as error:
        raise ToolkitError(f"the model carries no readable TFLite metadata: {error}") from None
    files = {name: displayer.get_associated_file_buffer(name) for name in displayer.get_packed_associated_file_list()}
    return json.loads(displayer.get_metadata_json()), files


def verify_metadata(model: bytes, info: ModelInfo, labels: list[str]) -> dict:
    """Read the metadata back and check labels, normalisation, tensor names and general fields."""
    found, files = read_metadata(model)
    graph = found["subgraph_metadata"][0]
    image, output = graph["input_tensor_metadata"][0], graph["output_tensor_metadata"][0]
    label_files = [f["name"] for f in output.get("associated_files", []) if f["type"] == "TENSOR_AXIS_LABELS"]
    normalisation = next(
        (u["options"] for u in image.get("process_units", []) if u["options_type"] == "NormalizationOptions"), {}
    )
    checks = {
        "name": found.get("name") == info.name,
        "version": found.get("version") == info.version,
        "author": found.get("author") == info.author,
        "licence": found.get("license") == info.licence,
        "tensor names": (image.get("name"), output.get("name")) == ("image", "probabilities"),
        "colour space": image.get("content", {}).get("content_properties", {}).get("color_space") == "RGB",
        "normalisation": (normalisation.get("mean"), normalisation.get("std")) == (NORM_MEAN, NORM_STD),
        "label file": len(label_files) == 1 and label_files[0] in files,
    }
    if checks["label file"]:
        checks["labels"] = files[label_files[0]].decode().splitlines() == labels
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise ToolkitError(f"metadata read back from the exported model does not match: {', '.join(failed)}")
    return found
