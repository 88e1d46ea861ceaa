"""Where a finished MobileNetV2 run's int8 drift comes from, and whether equalising its streams removes it.

Scored on the validation split (where choices are made) as top-1 agreement with the float model, like
the drift gate. Four measures:
- the int8 model the export writes (bias correction on, the export's calibration set), run by LiteRT;
- Keras simulations that quantize one part at a time, to split the drift by cause: the folded kernels
  rounded to their int8 grid (after bias correction), per-tensor uint8 on the linear bottlenecks'
  streams (``project_BN`` and ``Add`` outputs), and on the ReLU6 outputs, each with the ranges that
  calibration sees;
- cross-layer equalisation of the streams (after Nagel et al., "Data-Free Quantization", 2019): nothing
  nonlinear sits on a stream, so scaling its channel c by 1/s_c in every block of a stage and the 1x1
  convolutions that read it by s_c is exact in float; s_c = (relative activation range / relative weight
  range) ** strength, strength 1 equalising the streams fully;
- how many images sit near a tie (the float model's top-2 margin), which any noise flips.

    .venv/bin/python research/int8_drift_ham10000.py models/ham10000_mobilenet_v2

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

from toolkit.base.runtime import dequantize_output, interpreter, quantize_input
from toolkit.export.bias_correction import bias_corrected, folded_pairs, int8_steps
from toolkit.export.convert import convert
from toolkit.export.quantization import Quantization
from toolkit.model.classifier import backbone_of, predict

RESULT = "int8_drift_ham10000.json"
STRENGTHS = (0.5, 1.0)
MARGINS = (0.02, 0.05, 0.1)


def is_stream(layer: keras.layers.Layer) -> bool:
    return layer.name.endswith("project_BN") or isinstance(layer, keras.layers.Add)


def is_relu(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.ReLU)


def agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    return round(float((probs.argmax(1) == reference.argmax(1)).mean()), 4)


def litert_probs(model: bytes, images: np.ndarray) -> np.ndarray:
    """The converted model over ``images``, one at a time as an app runs it."""
    runner = interpreter(model)
    given, taken = runner.get_input_details()[0], runner.get_output_details()[0]
    outputs = []
    for image in images:
        runner.set_tensor(given["index"], quantize_input(image[None], given["dtype"].__name__, *given["quantization"]))
        runner.invoke()
        outputs.append(
            dequantize_output(runner.get_tensor(taken["index"])[0], taken["dtype"].__name__, *taken["quantization"])
        )
    return np.array(outputs)


class FakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric uint8, as the converter quantizes an activation with range [low, high]."""

    def __init__(self, low: float, high: float, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = min(float(low), 0.0), max(float(high), 0.0)

    def call(self, x):
        step = (self.high - self.low) / 255
        zero = round(-self.low / step)
        return (keras.ops.clip(keras.ops.round(x / step) + zero, 0, 255) - zero) * step


def split_at_backbone(model: keras.Model) -> tuple[keras.Model, keras.Model, keras.Model]:
    """(what feeds the backbone, the backbone, what follows it), so the backbone alone can be rebuilt."""
    backbone = backbone_of(model)
    index = model.layers.index(backbone)
    before = keras.Model(model.input, model.layers[index - 1].output)
    head_input = keras.Input(backbone.output.shape[1:])
    x = head_input
    for layer in model.layers[index + 1 :]:
        x = layer(x)
    return before, backbone, keras.Model(head_input, x)


def tensor_ranges(backbone: keras.Model, inputs: np.ndarray, layers: list) -> dict[str, tuple[float, float]]:
    """Each layer output's (min, max) over ``inputs``, reduced per image so the maps never sit in memory."""
    extremes = [
        keras.ops.stack([keras.ops.min(layer.output, axis=(1, 2, 3)), keras.ops.max(layer.output, axis=(1, 2, 3))], 1)
        for layer in layers
    ]
    found = keras.Model(backbone.input, extremes).predict(inputs, batch_size=32, verbose=0)
    return {layer.name: (float(f[:, 0].min()), float(f[:, 1].max())) for layer, f in zip(layers, found, strict=True)}


def with_fake_quant(backbone: keras.Model, ranges: dict[str, tuple[float, float]], quant=FakeQuant) -> keras.Model:
    """The backbone's own layers re-called in order, each output named in ``ranges`` passed through ``quant``."""
    start = keras.Input(backbone.input.shape[1:])
    tensors = {id(backbone.input): start}
    for layer in backbone.layers[1:]:
        source = layer.input
        args = [tensors[id(s)] for s in source] if isinstance(source, list) else tensors[id(source)]
        out = layer(args)
        tensors[id(layer.output)] = quant(*ranges[layer.name])(out) if layer.name in ranges else out
    return keras.Model(start, tensors[id(backbone.output)])


def simulated(model: keras.Model, calibration: np.ndarray, images: np.ndarray, keep) -> np.ndarray:
    """``images`` through ``model`` with the backbone's outputs that ``keep`` selects fake-quantized."""
    before, backbone, after = split_at_backbone(model)
    layers = [layer for layer in backbone.layers if keep(layer)]
    ranges = tensor_ranges(backbone, before.predict(calibration, verbose=0), layers)
    inside = with_fake_quant(backbone, ranges).predict(before.predict(images, verbose=0), batch_size=64, verbose=0)
    return after.predict(inside, verbose=0)


def weights_rounded(model: keras.Model, calibration: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Float activations, every folded kernel on its int8 grid after bias correction (the head stays float)."""
    pairs = [(c, n) for c, n in folded_pairs(backbone_of(model)) if not isinstance(c, keras.layers.DepthwiseConv2D)]
    with bias_corrected(model, calibration):  # snaps the 3x3 depthwise kernels itself, and restores every kernel
        for conv, norm in pairs:
            steps, scale, gain = int8_steps(conv, norm)
            conv.kernel.assign((np.round(steps) * scale / gain).reshape(conv.kernel.shape))
        return predict(model, images, "weights on the int8 grid")


def stream_stages(backbone: keras.Model) -> list[tuple[list, list]]:
    """Per stage, (the layers whose outputs make up its stream, the layers that read it); Adds join a stage."""
    stage_of = {layer.name: layer.name for layer in backbone.layers if is_stream(layer)}

    def root(name: str) -> str:
        while stage_of[name] != name:
            name = stage_of[name]
        return name

    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Add):
            for source in layer.input:
                stage_of[root(source._keras_history.operation.name)] = root(layer.name)
    stages: dict[str, list] = {}
    for layer in backbone.layers:
        if is_stream(layer):
            stages.setdefault(root(layer.name), []).append(layer)
    readers = {
        name: [
            layer
            for layer in backbone.layers
            if not isinstance(layer, keras.layers.Add | keras.layers.InputLayer)
            and layer.input._keras_history.operation in members
        ]
        for name, members in stages.items()
    }
    return [(members, readers[name]) for name, members in stages.items()]


def equalise(model: keras.Model, calibration: np.ndarray, strength: float) -> list[dict]:
    """Rescale every stage's stream channel-wise (exact in float); what each stage's range spread became."""
    before, backbone, _ = split_at_backbone(model)
    inputs = before.predict(calibration, verbose=0)
    report = []
    for members, readers in stream_stages(backbone):
        if not all(isinstance(r, keras.layers.Conv2D) and r.kernel.shape[:2] == (1, 1) for r in readers):
            continue  # only a 1x1 convolution can take the inverse scale exactly
        peaks = keras.Model(
            backbone.input, [keras.ops.max(keras.ops.abs(layer.output), axis=(1, 2)) for layer in members]
        )
        found = peaks.predict(inputs, batch_size=32, verbose=0)
        activation = np.max([f.max(axis=0) for f in (found if isinstance(found, list) else [found])], axis=0)
        kernels = [np.abs(keras.ops.convert_to_numpy(r.kernel)[0, 0]) for r in readers]  # (in, out)
        weight = np.max([(k / k.max(axis=0)).max(axis=1) for k in kernels], axis=0)  # per output's own int8 scale
        scale = ((activation / activation.max()) / weight) ** strength
        scale /= np.exp(np.log(scale).mean())
        for layer in members:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.gamma.assign(keras.ops.convert_to_numpy(layer.gamma) / scale)
                layer.beta.assign(keras.ops.convert_to_numpy(layer.beta) / scale)
        for reader in readers:
            reader.kernel.assign(keras.ops.convert_to_numpy(reader.kernel) * scale[None, None, :, None])
        spread = activation.max() / np.median(activation)
        after = activation / scale
        report.append(
            {
                "stage": [layer.name for layer in members],
                "range_spread": [round(float(spread), 2), round(float(after.max() / np.median(after)), 2)],
            }
        )
    return report


def main() -> None:
    from toolkit.data.images import load_images
    from toolkit.export.calibration import calibration_images
    from toolkit.export.options import ExportOptions
    from toolkit.train.runs import open_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run", type=Path, help="a finished MobileNetV2 run folder (a packed one, such as models/..., too)"
    )
    args = parser.parse_args()
    run = open_run(args.run)
    calibration, _ = calibration_images(run, ExportOptions.calibration_images)
    rows = run.rows("val")
    images = load_images(rows["path"].tolist(), run.input_size, run.resize_mode).images
    model = run.load_model()
    reference = predict(model, images.astype(np.float32), "float model on val")
    top2 = np.sort(reference, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    int8 = Quantization("int8")
    floats = calibration.astype(np.float32), images.astype(np.float32)
    result = {
        "run": in_repo(args.run.resolve()),
        "val_images": len(images),
        "calibration_images": len(calibration),
        "share_with_top2_margin_below": {str(m): round(float((margin < m).mean()), 4) for m in MARGINS},
        "top1_agreement": {
            "int8_litert": agreement(
                litert_probs(convert(model, run.input_size, int8, calibration), images), reference
            ),
            "simulated_weights_only": agreement(weights_rounded(model, *floats), reference),
            "simulated_streams_only": agreement(simulated(model, *floats, is_stream), reference),
            "simulated_relu6_only": agreement(simulated(model, *floats, is_relu), reference),
            "simulated_streams_and_relu6": agreement(
                simulated(model, *floats, lambda layer: is_stream(layer) or is_relu(layer)), reference
            ),
        },
        "equalised": {},
    }
    for strength in STRENGTHS:
        equalised = run.load_model()
        stages = equalise(equalised, floats[0], strength)
        float_change = np.abs(predict(equalised, floats[1], "equalised float model") - reference).max()
        blob = convert(equalised, run.input_size, int8, calibration)
        result["equalised"][str(strength)] = {
            "max_float_probability_change": float(f"{float_change:.1e}"),
            "int8_litert_top1_agreement": agreement(litert_probs(blob, images), reference),
            "stages": stages,
        }
    print(json.dumps(result, indent=2))
    path = write_result(RESULT, {**environment(), **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
