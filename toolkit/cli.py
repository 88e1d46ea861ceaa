"""``python -m toolkit``: parses arguments and calls the stage modules; no logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from toolkit import __version__
from toolkit.calibrate import OBJECTIVES
from toolkit.drift import Gate
from toolkit.errors import GateFailed, ToolkitError
from toolkit.export.convert import BACKENDS, IO_TYPES, QUANTIZATIONS


def _print_splits(prepared, demo: bool) -> None:
    from toolkit.data.split import class_counts

    print(f"source: {prepared.source}")
    if demo:
        print("note: this is the embedded DEMO set of synthetic images, not dermoscopy")
    if not prepared.has_lesion_ids:
        print(
            "warning: no lesion ids in this layout; images are grouped one per lesion, so leakage cannot be ruled out"
        )
    counts = class_counts(prepared.table)
    print("\nimages per split and class:")
    print(counts.to_string())
    shares = counts.drop(columns="total").div(counts["total"], axis=0) * 100
    worst = (shares.drop(index="all") - shares.loc["all"]).abs().max().max()
    print(f"\nlargest class-share difference from the whole: {worst:.2f} percentage points")
    print(f"lesions: {prepared.table['lesion_id'].nunique()}")
    print("\naudit:")
    for line in prepared.audit.lines():
        print(f"  {line}")
    if prepared.skipped:
        print(f"\nskipped {len(prepared.skipped)} bad file(s):")
        for _, reason in prepared.skipped:
            print(f"  {reason}")


def cmd_data(args: argparse.Namespace) -> int:
    from toolkit.data.demo import ensure_demo_set
    from toolkit.data.split import prepare_splits, write_manifest

    if (args.root is None) == (not args.demo):
        raise ToolkitError("give a dataset with --root DIR, or --demo for the embedded demo set")
    prepared = prepare_splits(
        ensure_demo_set() if args.demo else args.root,
        layout=args.layout,
        val=args.val,
        test=args.test,
        seed=args.seed,
        keep_official=args.split == "official",
        skip_bad=args.skip_bad,
        check_images=not args.no_image_check,
    )
    _print_splits(prepared, args.demo)
    if args.out:
        write_manifest(prepared.table, args.out)
        print(f"\nwrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from toolkit.data.demo import ensure_demo_set
    from toolkit.data.pipeline import AugmentConfig
    from toolkit.train import TrainConfig, train

    if not args.resume and (args.data is None) == (not args.demo):
        raise ToolkitError("give the training data with --data DIR (or a split manifest), or --demo")
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given.update(
        data=str(args.data or "demo"),
        input_size=args.input_size or (64 if args.demo else 0),
        augment=AugmentConfig.preset(args.augment),
    )
    config = TrainConfig(**given)
    out = train(
        config, args.out, resume=args.resume, force=args.force, demo_root=ensure_demo_set() if args.demo else None
    )
    print(f"wrote run folder {out}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from toolkit.train import refit_decision

    run = refit_decision(args.run, args.decision)  # prints the decision it fits
    print(f"rewrote {run}: model.keras, decision.json, reference.npz, metrics.json and plots")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from toolkit.runs import pack_run

    out = pack_run(args.run, args.out, args.force)
    size = sum(path.stat().st_size for path in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB): the float model without optimizer state, reference, metrics, decision")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from toolkit.evaluate import evaluate_runs

    runs = args.ensemble or [args.run]
    if runs == [None]:
        raise ToolkitError("give a run with --run DIR, or several with --ensemble DIR DIR ...")
    metrics = evaluate_runs(runs, args.split)
    label = "ensemble of " + ", ".join(map(str, runs)) if args.ensemble else str(runs[0])
    print(f"{label}, {args.split} split ({metrics['images']} images)")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr_macro", "ece"):
        print(f"  {key:18s} {metrics[key]:.4f}")
    print("  recall per class: " + ", ".join(f"{c} {v['recall']:.2f}" for c, v in metrics["per_class"].items()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from toolkit.export import ExportOptions, export_run
    from toolkit.export.convert import Quantization

    quantization = Quantization(
        mode=args.quantize or "float32",
        io=args.io,
        backend=args.quantizer,
        allow_float_ops=args.allow_float_ops,
        bias_correction=not args.no_bias_correction,
    )
    given = {f.name: getattr(args, f.name) for f in fields(ExportOptions) if hasattr(args, f.name)}
    gate = None if args.skip_drift else _gate(args)
    reproduce = ("python -m toolkit " + shlex.join(args.argv),)
    bundle = export_run(ExportOptions(**given, quantization=quantization, gate=gate, reproduce=reproduce))
    manifest = json.loads((bundle / "manifest.json").read_text())
    size = manifest["files"]["model.tflite"]["bytes"] / 1e6
    tensors = f"input {manifest['input']['dtype']} {manifest['input']['shape']}, output {manifest['output']['dtype']}"
    print(f"wrote bundle {bundle}: {manifest['quantization']} model.tflite {size:.2f} MB, {tensors}")
    return 0


def _gate(args: argparse.Namespace) -> Gate:
    return Gate(args.min_agreement, args.max_balanced_accuracy_drop, args.max_recall_drop, args.max_sensitivity_drop)


def cmd_drift(args: argparse.Namespace) -> int:
    from toolkit.bundle import Bundle
    from toolkit.drift import GATE_FAILED, export_eval_pack, markdown, measure_drift, run_of, write_report

    bundle = Bundle.open(args.bundle)
    if bundle.demo_warning():
        print(bundle.demo_warning(), flush=True)
    run = run_of(bundle, args.run)
    if args.export_eval_pack:
        out = export_eval_pack(bundle, run, args.split, args.export_eval_pack)
        print(f"wrote eval pack {out}: {args.split} images resized for {bundle.path.name}, listed in eval_pack.csv")
        return 0
    report = measure_drift(bundle, run, args.split, _gate(args), args.predictions)
    out = write_report(report, args.out or bundle.path / "drift")
    print(markdown(report))
    print(f"wrote {out}/drift.json, drift.md, drift.png")
    return 0 if report["gate"]["passed"] else GATE_FAILED


def _add_gate_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Gate()
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=defaults.min_agreement,
        help=f"top-1 agreement (default {defaults.min_agreement})",
    )
    parser.add_argument(
        "--max-balanced-accuracy-drop",
        type=float,
        default=defaults.max_balanced_accuracy_drop,
        help=f"in points (default {defaults.max_balanced_accuracy_drop})",
    )
    parser.add_argument(
        "--max-recall-drop",
        type=float,
        default=defaults.max_recall_drop,
        help=f"per class, in points (default {defaults.max_recall_drop})",
    )
    parser.add_argument(
        "--max-sensitivity-drop",
        type=float,
        default=defaults.max_sensitivity_drop,
        help=f"referral sensitivity change per operating point, in points (default {defaults.max_sensitivity_drop})",
    )


def _thread_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ToolkitError(f"--threads takes comma-separated numbers, e.g. 1,2,4; received {text!r}") from None
    if not counts or min(counts) < 1:
        raise ToolkitError(f"--threads must be positive numbers; received {text!r}")
    return counts


def cmd_bench(args: argparse.Namespace) -> int:
    from toolkit.bench import bench_adb, bench_local, import_app_timings, table, write_json

    threads = _thread_counts(args.threads)
    if args.import_file:
        report = import_app_timings(args.import_file)
    elif not args.bundle:
        raise ToolkitError("give at least one --bundle DIR (or --import FILE)")
    elif args.adb:
        if args.benchmark_binary is None:
            raise ToolkitError("--adb needs --benchmark-binary PATH (TensorFlow Lite's benchmark_model for Android)")
        if len(args.bundle) != 1:
            raise ToolkitError("--adb benchmarks one --bundle at a time")
        report = bench_adb(
            args.bundle[0],
            args.benchmark_binary,
            args.serial,
            threads,
            args.runs,
            args.warmup,
            not args.no_xnnpack,
            args.gpu,
            args.nnapi,
        )
    else:
        report = bench_local(args.bundle, threads, args.runs, args.warmup, not args.no_xnnpack, args.images)
    print(table(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from toolkit.bundle import NOT_A_DEVICE, Bundle
    from toolkit.referral import score

    bundle = Bundle.open(args.bundle)
    warning = bundle.demo_warning()
    if warning:
        print(warning, file=sys.stderr if args.json else sys.stdout, flush=True)
    default, points = bundle.operating_points()
    point = next((p for p in points if p.name == default), None)
    images = np.stack([bundle.preprocess(path) for path in args.images])
    probs = bundle.predict(images)
    results = []
    for path, row in zip(args.images, probs, strict=True):
        order = np.argsort(-row, kind="stable")[: args.top]
        top = [{"label": bundle.labels[i], "probability": float(row[i])} for i in order]
        result = {"image": str(path), "top": top, "note": NOT_A_DEVICE}
        if point is not None:
            result["referral"] = {
                "operating_point": point.name,
                "score": round(float(score(row, point.classes)), 4),
                "threshold": point.threshold,
                "refer": bool(point.refers(row[None])[0]),
            }
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(NOT_A_DEVICE)
    for result in results:
        print(result["image"])
        for rank, entry in enumerate(result["top"], 1):
            print(f"  {rank}. {entry['label']:<8s} {entry['probability']:.3f}")
        if "referral" in result:
            referral = result["referral"]
            verdict = "refer to a dermatologist" if referral["refer"] else "no referral"
            print(
                f"  malignancy score ({' + '.join(point.classes)}) {referral['score']:.3f}: {verdict} "
                f"(operating point {point.name}, threshold {point.threshold:.3f})"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toolkit", description=__doc__.split(":")[0])
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="read a dataset, split it by lesion, audit it, write the split manifest")
    data.add_argument(
        "--root", "--data", dest="root", type=Path, help="HAM10000 folder, DermaMNIST npz, or class folders"
    )
    data.add_argument("--demo", action="store_true", help="use the embedded synthetic demo set")
    data.add_argument("--layout", default="auto", choices=["auto", "ham10000", "dermamnist", "folders", "manifest"])
    data.add_argument("--out", type=Path, help="write the split manifest CSV here")
    data.add_argument("--val", type=float, default=0.15, help="share of lesions for validation (default 0.15)")
    data.add_argument("--test", type=float, default=0.15, help="share of lesions for test (default 0.15)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument(
        "--split",
        default="lesion",
        choices=["lesion", "official"],
        help="our lesion split, or the one shipped (DermaMNIST)",
    )
    data.add_argument("--skip-bad", action="store_true", help="skip missing or undecodable images and list them")
    data.add_argument("--no-image-check", action="store_true", help="do not decode every image to check it")
    data.set_defaults(handler=cmd_data)

    train = commands.add_parser("train", help="two-phase transfer learning into a run folder")
    train.add_argument("--data", type=Path, help="a dataset in any layout `data` reads, or a split manifest")
    train.add_argument("--demo", action="store_true", help="train on the embedded synthetic demo set")
    train.add_argument("--arch", default="mobilenet_v2", help="mobilenet_v2, densenet121, densenet169, densenet201")
    train.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4")
    train.add_argument("--input-size", type=int, default=0, help="square input size (default: the backbone's)")
    train.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    train.add_argument("--resize-mode", default="squash", choices=["squash", "pad"])
    train.add_argument("--boundary", default="", help="fine-tune from: block_13, block_16, conv5, all, or a count")
    train.add_argument("--epochs-head", type=int, default=3)
    train.add_argument("--epochs-finetune", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr-head", type=float, default=1e-3)
    train.add_argument("--lr-finetune", type=float, default=1e-4)
    train.add_argument("--optimizer", default="adam", choices=["adam", "adamw"])
    train.add_argument(
        "--schedule",
        default="plateau",
        choices=["plateau", "cosine"],
        help="plateau: cut the learning rate when val loss stalls; cosine: one-epoch warm-up, then cosine decay to 0",
    )
    train.add_argument("--label-smoothing", type=float, default=0.0)
    train.add_argument("--imbalance", default="class_weight", choices=["class_weight", "oversample", "none"])
    train.add_argument("--class-weight-power", type=float, default=1.0, help="0.5 for square-root class weights")
    train.add_argument(
        "--augment",
        default="notebook",
        choices=["notebook", "dermoscopy", "none"],
        help="notebook: the original ImageDataGenerator settings; dermoscopy: any rotation, more zoom and contrast",
    )
    train.add_argument(
        "--mixup", type=float, default=0.0, metavar="ALPHA", help="fine-tune mixup, Beta(ALPHA, ALPHA); 0.2 is usual"
    )
    train.add_argument("--dropout", type=float, default=0.2)
    train.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    train.add_argument(
        "--average-last",
        type=int,
        default=0,
        metavar="N",
        help="also try the mean weights of the last N fine-tune epochs; kept when val balanced accuracy is higher",
    )
    train.add_argument(
        "--decision",
        default="macro_f1",
        choices=[*OBJECTIVES, "none"],
        help="after training: shift the class priors to maximise this metric on val, then fit a temperature",
    )
    train.add_argument("--no-bn-fix", dest="bn_fix", action="store_false", help="ablation only: BatchNorm trains")
    train.add_argument("--limit", type=int, default=0, help="at most N images per split, stratified")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/NAME")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    train.add_argument("--force", action="store_true", help="replace an existing run folder")
    train.set_defaults(handler=cmd_train)

    decide = commands.add_parser(
        "decide", help="fit a finished run's decision rule again on val (another objective), without retraining"
    )
    decide.add_argument("--run", type=Path, required=True)
    decide.add_argument("--decision", choices=[*OBJECTIVES, "none"], help="default: the objective the run used")
    decide.set_defaults(handler=cmd_decide)

    pack = commands.add_parser(
        "pack", help="copy a finished run for committing: no optimizer state, paths relative to the checkout"
    )
    pack.add_argument("--run", type=Path, required=True, help="finished run folder, e.g. runs/NAME")
    pack.add_argument("--out", type=Path, required=True, help="where it goes, e.g. models/NAME")
    pack.add_argument("--force", action="store_true", help="replace an existing folder")
    pack.set_defaults(handler=cmd_pack)

    evaluate = commands.add_parser("evaluate", help="metrics of a run, or of an ensemble of runs")
    evaluate.add_argument("--run", type=Path)
    evaluate.add_argument("--ensemble", nargs="+", type=Path, help="average the probabilities of these runs")
    evaluate.add_argument("--split", default="test", choices=["val", "test"])
    evaluate.set_defaults(handler=cmd_evaluate)

    export = commands.add_parser("export", help="a training run as a Flutter-ready TFLite bundle")
    export.add_argument("--run", type=Path, help="run folder (default: the newest finished run under runs/)")
    export.add_argument(
        "--quantize",
        nargs="?",
        const="int8",
        choices=QUANTIZATIONS,
        help="int8 (full integer, the default when the flag has no value), float16 or dynamic; without it float32",
    )
    export.add_argument(
        "--io", default="", choices=IO_TYPES, help="int8 only: input and output dtype (default uint8; int8 for litert)"
    )
    export.add_argument("--quantizer", default="tflite", choices=BACKENDS, help="int8 back end (default tflite)")
    export.add_argument("--allow-float-ops", action="store_true", help="int8: accept ops that stay float")
    export.add_argument(
        "--no-bias-correction",
        action="store_true",
        help="int8: convert the kernels as they are, without cancelling their rounding shift (for comparison)",
    )
    export.add_argument("--calibration-images", type=int, default=300, help="class-stratified, from train")
    export.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    export.add_argument("--out", type=Path, default=Path("flutter_assets"), help="parent folder of the bundle")
    export.add_argument("--name", default="", help="bundle folder name (default: the run's name)")
    export.add_argument("--labels", type=Path, help="label file, one per line in output order")
    export.add_argument("--author", default="lesion-toolkit")
    export.add_argument("--licence", default="", help="default: the training data's licence")
    export.add_argument("--model-version", default="1.0.0")
    export.add_argument("--force", action="store_true", help="replace an existing bundle")
    export.add_argument("--skip-drift", action="store_true", help="do not run the drift gate")
    export.add_argument("--drift-split", default="test", choices=["val", "test"], help="split the gate runs on")
    export.add_argument("--accept-drift", action="store_true", help="publish the bundle even if the gate fails")
    export.add_argument(
        "--selective",
        action="store_true",
        help="int8 failing the gate: retry with more calibration, then with the worst layers in float",
    )
    _add_gate_flags(export)
    export.set_defaults(handler=cmd_export)

    drift = commands.add_parser("drift", help="an exported bundle against the run's float reference, gated")
    drift.add_argument("--bundle", type=Path, required=True, help="bundle folder written by export")
    drift.add_argument("--run", type=Path, help="training run (default: the run named in the bundle's manifest)")
    drift.add_argument("--split", default="test", choices=["val", "test"])
    drift.add_argument("--out", type=Path, help="report folder (default: BUNDLE/drift)")
    drift.add_argument("--predictions", type=Path, help="device predictions (CSV or JSON lines) instead of the bundle")
    drift.add_argument("--export-eval-pack", type=Path, metavar="DIR", help="write the split's resized images here")
    _add_gate_flags(drift)
    drift.set_defaults(handler=cmd_drift)

    bench = commands.add_parser("bench", help="latency, memory and size of bundles, here or on a phone")
    bench.add_argument("--bundle", type=Path, action="append", help="bundle folder; repeat to compare several")
    bench.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    bench.add_argument("--runs", type=int, default=100, help="timed runs per bundle and thread count (>= 100)")
    bench.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    bench.add_argument("--images", type=Path, help="folder of images to feed (default: random bytes)")
    bench.add_argument("--no-xnnpack", action="store_true", help="the builtin kernels instead of XNNPACK")
    bench.add_argument("--json", type=Path, help="also write the report as JSON here")
    bench.add_argument("--adb", action="store_true", help="run benchmark_model on an Android device over adb")
    bench.add_argument("--serial", help="adb device serial (default: the only device)")
    bench.add_argument("--benchmark-binary", type=Path, help="TensorFlow Lite benchmark_model built for the device")
    bench.add_argument("--gpu", action="store_true", help="--adb: the GPU delegate")
    bench.add_argument("--nnapi", action="store_true", help="--adb: the NNAPI delegate")
    bench.add_argument("--import", dest="import_file", type=Path, metavar="FILE", help="timings a Flutter app wrote")
    bench.set_defaults(handler=cmd_bench)

    predict = commands.add_parser("predict", help="classify images with an exported bundle")
    predict.add_argument("--bundle", type=Path, required=True, help="bundle folder written by export")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show per image")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a list")
    predict.set_defaults(handler=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the model card's "reproduce"
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices are not the user's concern
    try:
        return args.handler(args)
    except GateFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
