"""The argument parser: one builder per command, flags made from the option dataclasses (:mod:`.flags`).

Imports only what is free of TensorFlow, Keras, pandas and scikit-learn, so ``--help`` and argument
errors answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit import __version__
from toolkit.cli.flags import add_fields, field_defaults
from toolkit.cli.help import BENCH_HELP, EXPORT_HELP, GATE_HELP, QUANTIZATION_HELP, TRAIN_HELP
from toolkit.data.augment import AUGMENT_PRESETS
from toolkit.data.balance import IMBALANCE_MODES
from toolkit.data.images import RESIZE_MODES
from toolkit.data.layouts import LAYOUTS, NPZ_SIZES, SPLIT_SEED, TEST_SHARE, VAL_SHARE
from toolkit.export.options import ExportOptions, Gate
from toolkit.export.quantization import BACKENDS, IO_TYPES, QUANTIZATIONS, Quantization
from toolkit.model.backbones import VIEW_COUNTS
from toolkit.train.config import DECISIONS, OPTIMIZERS, SCHEDULES, TrainConfig

DESCRIPTION = (
    "Train skin-lesion classifiers, export them as TFLite bundles for Flutter apps, check their drift and "
    "benchmark them. Not a medical device: research, education and app prototyping only."
)
EPILOG = (
    "The flow: data -> train -> export (with the drift gate) -> drift -> bench -> predict. COMMAND --help for more."
)
EVAL_SPLITS = ("val", "test")
GLOBAL_FLAGS = {
    "--verbose": "show TensorFlow's and absl's native log lines",
    "--debug": "print the traceback of an error (exit 3 for an unexpected one, as without it)",
}


def _command(commands, name: str, usage: str, help_text: str, common) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, usage=f"python -m toolkit {name} {usage}", help=help_text, parents=[common])
    parser.set_defaults(command=name)
    return parser


def _add_data(commands, common) -> None:
    data = _command(
        commands,
        "data",
        "(--root DIR | --demo) [--out CSV] [options]",
        "read a dataset, split it by lesion, audit it, write the split file",
        common,
    )
    data.add_argument(
        "--root", "--data", dest="root", type=Path, help="HAM10000 folder, DermaMNIST npz, or class folders"
    )
    data.add_argument("--demo", action="store_true", help="use the embedded synthetic demo set")
    data.add_argument("--layout", default="auto", choices=LAYOUTS)
    data.add_argument(
        "--npz-size",
        type=int,
        default=NPZ_SIZES[0],
        choices=NPZ_SIZES,
        help="DermaMNIST: which dermamnist_SIZE.npz of a folder to read (default %(default)s)",
    )
    data.add_argument("--out", type=Path, help="write the split file CSV here")
    data.add_argument(
        "--val", type=float, default=VAL_SHARE, help=f"share of lesions for validation (default {VAL_SHARE})"
    )
    data.add_argument(
        "--test", type=float, default=TEST_SHARE, help=f"share of lesions for test (default {TEST_SHARE})"
    )
    data.add_argument("--seed", type=int, default=SPLIT_SEED)
    splits = ["lesion", "official"]
    data.add_argument("--split", default="lesion", choices=splits, help="our lesion split, or DermaMNIST's own")
    data.add_argument("--skip-bad", action="store_true", help="skip missing or undecodable images and list them")
    data.add_argument("--no-image-check", action="store_true", help="do not decode every image to check it")


def _add_train(commands, common) -> None:
    train = _command(
        commands,
        "train",
        "(--data DIR | --demo) --out DIR [options]",
        "two-phase transfer learning into a run folder",
        common,
    )
    train.add_argument(
        "--data", type=Path, metavar="PATH", help="a dataset in any layout `data` reads, or a split file"
    )
    train.add_argument("--demo", action="store_true", help="train on the embedded synthetic demo set")
    presets = {preset: name for name, preset in AUGMENT_PRESETS.items()}
    train.add_argument(
        "--augment",
        default=presets[field_defaults(TrainConfig)["augment"]],
        choices=AUGMENT_PRESETS,
        help="notebook: the original ImageDataGenerator settings; dermoscopy: any rotation, more zoom and "
        "contrast; dermoscopy_colour: also a gain per colour channel; default %(default)s",
    )
    choices = {
        "resize_mode": RESIZE_MODES,
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "imbalance": IMBALANCE_MODES,
        "decision": DECISIONS,
        "views": VIEW_COUNTS,
    }
    metavars = {
        "mixup": "ALPHA",
        "average_last": "N",
        "ema": "MOMENTUM",
        "limit": "N",
        "progressive_size": "PX",
        "progressive_epochs": "N",
    }
    add_fields(train, TrainConfig, TRAIN_HELP, choices, skip=("data", "augment"), metavars=metavars)
    train.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/NAME")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    train.add_argument("--force", action="store_true", help="replace an existing run folder")
    hosts = train.add_argument_group("several hosts (JAX; default: Keras's KERAS_DISTRIBUTION_* variables)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, the same for every process")
    hosts.add_argument("--num-processes", type=int, metavar="N", help="how many processes train together")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 to N-1; 0 writes the run")
    hosts.add_argument("--coordinator-timeout", type=float, metavar="S", help="seconds to reach it; default 30")


def _add_run_tools(commands, common) -> None:
    decide = _command(
        commands,
        "decide",
        "--run DIR [--decision OBJECTIVE] [--views N]",
        "fit a finished run's decision rule again on val (another objective, or mirror views), without retraining",
        common,
    )
    decide.add_argument("--run", type=Path, required=True)
    decide.add_argument("--decision", choices=DECISIONS, help="default: the objective the run used")
    decide.add_argument(
        "--views", type=int, choices=VIEW_COUNTS, help="average this many mirror views first; default: the run's"
    )
    soup = _command(
        commands,
        "soup",
        "--runs DIR DIR [DIR ...] --out DIR [--force]",
        "average finished runs' weights greedily, each kept only if val holds (runs that differ in --finetune-seed)",
        common,
    )
    soup.add_argument("--runs", type=Path, nargs="+", required=True, help="finished run folders, e.g. runs/NAME")
    soup.add_argument("--out", type=Path, required=True, help="run folder for the soup, e.g. runs/NAME_soup")
    soup.add_argument("--force", action="store_true", help="replace an existing folder")
    pack = _command(
        commands,
        "pack",
        "--run DIR --out DIR [--force]",
        "copy a finished run for committing: no optimizer state, paths relative to the checkout",
        common,
    )
    pack.add_argument("--run", type=Path, required=True, help="finished run folder, e.g. runs/NAME")
    pack.add_argument("--out", type=Path, required=True, help="where it goes, e.g. models/NAME")
    pack.add_argument("--force", action="store_true", help="replace an existing folder")
    evaluate = _command(
        commands,
        "evaluate",
        "(--run DIR | --ensemble DIR [DIR ...]) [--split SPLIT]",
        "metrics of a run, or of an ensemble of runs",
        common,
    )
    evaluate.add_argument("--run", type=Path)
    evaluate.add_argument("--ensemble", nargs="+", type=Path, help="average the probabilities of these runs")
    evaluate.add_argument("--split", default="test", choices=EVAL_SPLITS)


def _add_export(commands, common) -> None:
    export = _command(
        commands,
        "export",
        "[--run DIR] [--quantize [PRESET]] [--out DIR] [options]",
        "a training run as a Flutter-ready TFLite bundle, checked by the drift gate",
        common,
    )
    export.add_argument(
        "--quantize",
        nargs="?",
        const="int8",
        choices=QUANTIZATIONS,
        help="int8 (full integer, the default when the flag has no value), float16 or dynamic; "
        "without the flag float32",
    )
    add_fields(
        export,
        Quantization,
        QUANTIZATION_HELP,
        {"io": IO_TYPES, "backend": BACKENDS},
        skip=("mode",),
        flags={"backend": "--quantizer"},
    )
    add_fields(
        export, ExportOptions, EXPORT_HELP, {"drift_split": EVAL_SPLITS}, skip=("quantization", "gate", "reproduce")
    )
    export.add_argument("--skip-drift", action="store_true", help="do not run the drift gate")
    add_fields(export, Gate, GATE_HELP)


def _add_drift(commands, common) -> None:
    drift = _command(
        commands,
        "drift",
        "--bundle DIR [--run DIR] [--predictions FILE] [options]",
        "an exported bundle against the run's float reference, gated",
        common,
    )
    drift.add_argument("--bundle", type=Path, required=True, help="bundle folder written by export")
    drift.add_argument("--run", type=Path, help="training run (default: the run named in the bundle's manifest)")
    drift.add_argument("--split", default="test", choices=EVAL_SPLITS)
    drift.add_argument("--out", type=Path, help="report folder (default: BUNDLE/drift)")
    drift.add_argument("--predictions", type=Path, help="device predictions (CSV or JSON lines) instead of the bundle")
    drift.add_argument("--export-eval-pack", type=Path, metavar="DIR", help="write the split's resized images here")
    add_fields(drift, Gate, GATE_HELP)


def _add_bench(commands, common) -> None:
    from toolkit.bench.options import BenchOptions

    bench = _command(
        commands,
        "bench",
        "--bundle DIR [--bundle DIR ...] [options]",
        "latency, memory and size of bundles, here or on a phone",
        common,
    )
    bench.add_argument("--bundle", type=Path, action="append", help="bundle folder; repeat to compare several")
    add_fields(
        bench,
        BenchOptions,
        BENCH_HELP,
        flags={"import_file": "--import"},
        metavars={"import_file": "FILE", "threads": "N,N"},
    )


def _add_predict(commands, common) -> None:
    predict = _command(
        commands,
        "predict",
        "--bundle DIR IMAGE [IMAGE ...] [--top N] [--json]",
        "classify images with an exported bundle (not a medical device)",
        common,
    )
    predict.add_argument("--bundle", type=Path, required=True, help="bundle folder written by export")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show per image (default 3)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a list")


def _add_preview(commands, common) -> None:
    preview = _command(
        commands,
        "preview",
        "--bundle DIR [--port N]",
        "run a bundle in the browser with LiteRT.js on a local page (not a medical device)",
        common,
    )
    preview.add_argument("--bundle", type=Path, required=True, help="bundle folder written by export")
    preview.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default %(default)s; 0: any free)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    parser = argparse.ArgumentParser(prog="python -m toolkit", description=DESCRIPTION, epilog=EPILOG)
    for flag, help_text in GLOBAL_FLAGS.items():  # SUPPRESS: a command's default must not undo one given before it
        common.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
        parser.add_argument(flag, action="store_true", help=help_text)
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_data, _add_train, _add_run_tools, _add_export, _add_drift, _add_bench, _add_predict, _add_preview):
        add(commands, common)
    return parser
