"""Is a finished run's int8 drift a shift of the logits, which the export could subtract, or noise?

The int8 model the export writes (bias correction on, the export's calibration set) and the float model
score training images outside the calibration sample; LiteRT keeps the int8 logits (the softmax's input)
so the two can be compared before the output's rounding. A per-class mean difference is a shift; the
spread around it is noise. The shift is fitted on one half of the images and subtracted on the other
(both ways round), so the agreement it buys is measured on images it was not fitted on.

    .venv/bin/python research/int8_logit_noise_ham10000.py models/ham10000_mobilenet_v2

A research script, not a benchmark; its results go beside the benchmarks' own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import environment, in_repo, write_result

from toolkit.base.classes import CLASSES
from toolkit.base.runtime import quantize_input
from toolkit.export.convert import convert
from toolkit.export.quantization import Quantization

RESULT = "int8_logit_noise_ham10000.json"


def float_logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The head's input times its kernel plus bias: the logits the softmax (and the folded decision rule) reads."""
    head = model.layers[-1]
    features = keras.Model(model.input, head.input).predict(images.astype(np.float32), batch_size=64, verbose=0)
    kernel, bias = head.get_weights()
    return features @ kernel + bias


def int8_logits(model: bytes, images: np.ndarray) -> np.ndarray:
    """The int8 model's softmax input, dequantised, one image at a time as an app runs it."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model, experimental_preserve_all_tensors=True)
    runner.allocate_tensors()
    softmax = next(op for op in runner._get_ops_details() if op["op_name"] == "SOFTMAX")
    tensor = next(t for t in runner.get_tensor_details() if t["index"] == softmax["inputs"][0])
    scale, zero = tensor["quantization"]
    given = runner.get_input_details()[0]
    logits = []
    for image in images:
        runner.set_tensor(given["index"], quantize_input(image[None], given["dtype"].__name__, *given["quantization"]))
        runner.invoke()
        logits.append((runner.get_tensor(tensor["index"])[0].astype(np.float32) - zero) * scale)
    return np.array(logits)


def centred(x: np.ndarray) -> np.ndarray:
    """Logits up to a constant per image, which the softmax ignores."""
    return x - x.mean(axis=1, keepdims=True)


def per_class(values: np.ndarray) -> dict[str, float]:
    return {name: round(float(value), 4) for name, value in zip(CLASSES, values, strict=True)}


def main() -> None:
    from toolkit.data.images import load_images
    from toolkit.export.calibration import calibration_images, stratified_sample
    from toolkit.export.options import ExportOptions
    from toolkit.train.runs import open_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder (a packed one, such as models/..., too)")
    parser.add_argument("--images", type=int, default=700, help="training images outside the calibration sample")
    args = parser.parse_args()
    run = open_run(args.run)
    calibration, used = calibration_images(run, ExportOptions.calibration_images)
    rest = run.rows("train").loc[lambda rows: ~rows["image_id"].isin(used["image_id"])]
    rows = stratified_sample(rest, args.images, seed=1)
    images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode).images
    model = run.load_model(compile=False)
    reference = float_logits(model, images)
    quantized = int8_logits(convert(model, run.input_size, Quantization("int8"), calibration), images)
    difference = centred(quantized) - centred(reference)
    halves = np.arange(len(images)) % 2 == 0, np.arange(len(images)) % 2 == 1
    corrected = quantized.copy()
    for fit, apply in (halves, halves[::-1]):
        corrected[apply] -= difference[fit].mean(axis=0)
    top2 = np.sort(reference, axis=1)[:, -2:]
    result = {
        "run": in_repo(args.run.resolve()),
        "images": len(images),
        "images_from": "training split, class-stratified (seed 1), outside the export's calibration sample",
        "calibration_images": len(calibration),
        "logit_difference_mean": per_class(difference.mean(axis=0)),
        "logit_difference_mean_standard_error": round(float(difference.std(axis=0).max() / np.sqrt(len(images))), 4),
        "logit_difference_spread": per_class(difference.std(axis=0)),
        "share_with_top2_logit_margin_below_spread": round(
            float((top2[:, 1] - top2[:, 0] < difference.std(axis=0).mean()).mean()), 4
        ),
        "top1_agreement": {
            "int8": round(float((quantized.argmax(1) == reference.argmax(1)).mean()), 4),
            "int8_shift_subtracted_cross_fitted": round(float((corrected.argmax(1) == reference.argmax(1)).mean()), 4),
        },
    }
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result(RESULT, {**environment(), **result})}")


if __name__ == "__main__":
    main()
