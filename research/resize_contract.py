"""Which resize can Python, JavaScript and Dart all compute to the same bytes? Candidates measured by drift.

The app resizes with its own code, so the bundle's contract must name a resize that any language can write out
exactly. Each candidate below is separable and written as taps (source index, weight) per output pixel, summed in
float64 in tap order and rounded half up (``toolkit.data.resize``, whose rule is the winner): IEEE-754 doubles give
the same bytes in JavaScript and Dart when the same operations run in the same order. Each is measured against the
OpenCV path the toolkit used before the contract (INTER_AREA when the image shrinks, INTER_LINEAR when it grows),
which the shipped model was trained with:

- ``linear``: bilinear with half-pixel centres and clamped edges (what OpenCV's INTER_LINEAR computes, in floats);
- ``area``: area averaging with fractional edge weights on both axes (OpenCV's INTER_AREA when shrinking);
- ``area_linear``: per axis, area when that axis shrinks and linear when it grows.

It reports, on the test split at the shipped bundle's size: pixel differences from the OpenCV path, and the
shipped model's top-1 agreement and largest probability change when fed each candidate instead.

    .venv/bin/python research/resize_contract.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import REPO, environment, write_result

from toolkit.data.images import decode_image
from toolkit.data.resize import area_taps, contract_taps, linear_taps, resize_exact

BUNDLE = REPO / "flutter_assets" / "ham10000_mobilenet_v2_float16"
RESULT = "resize_contract.json"


RULES = {"linear": linear_taps, "area": area_taps, "area_linear": contract_taps}


def opencv_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The toolkit's path before the contract: OpenCV, INTER_AREA if the image's area shrinks, else INTER_LINEAR."""
    import cv2

    shrinking = size * size < image.shape[0] * image.shape[1]
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def main() -> None:
    from toolkit.drift.gate import compare
    from toolkit.export.bundle import Bundle
    from toolkit.train.runs import open_run

    bundle = Bundle.open(BUNDLE)
    run = open_run(REPO / bundle.manifest["source"]["run"])
    ids = run.reference()["test_ids"]
    labels = run.reference()["test_labels"]
    paths = run.table.set_index("image_id").loc[ids, "path"].tolist()
    size = bundle.input_size
    decoded = [decode_image(path) for path in paths]
    baseline = np.stack([opencv_resize(image, size) for image in decoded])
    reference = bundle.predict(baseline, desc="opencv")
    results = {}
    for rule in RULES:
        images = np.stack([resize_exact(image, size, size, RULES[rule]) for image in decoded])
        difference = np.abs(images.astype(int) - baseline)
        probs = bundle.predict(images, desc=rule)
        agreement = compare(labels, reference, probs)
        results[rule] = {
            "mean_abs_pixel_diff": round(float(difference.mean()), 3),
            "max_pixel_diff": int(difference.max()),
            "share_of_bytes_equal": round(float((difference == 0).mean()), 4),
            "top1_agreement": agreement["top1_agreement"],
            "max_abs_prob_diff": round(float(np.abs(probs - reference).max()), 4),
        }
        print(rule, results[rule], flush=True)
    result = {
        **environment(),
        "bundle": str(BUNDLE.relative_to(REPO)),
        "images": len(ids),
        "size": size,
        "source_size": list(decoded[0].shape[:2]),
        "against": "the OpenCV path the model was trained with (INTER_LINEAR here: 200x150 -> 176x176 grows the area)",
        "candidates": results,
    }
    print(f"wrote {write_result(RESULT, result)}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
