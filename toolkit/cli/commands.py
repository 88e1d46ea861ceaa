"""The commands: each turns parsed arguments into one stage call and prints what it did; no logic of its own.

Stage modules are imported inside each command, so a command loads only what it uses.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
from dataclasses import fields

import numpy as np

from toolkit.base.errors import EXIT_GATE_FAILED, EXIT_OK, ToolkitError
from toolkit.base.io import check_writable
from toolkit.cli.quiet import load_tensorflow


def given(args: argparse.Namespace, cls) -> dict:
    """The parsed values of the flags made from ``cls``'s fields (see :mod:`.flags`)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


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
    from toolkit.data.split import prepare_splits, write_splits

    if args.root is not None and args.demo:
        raise ToolkitError(f"give either --root {args.root} or --demo, not both")
    if args.root is None and not args.demo:
        raise ToolkitError("give a dataset with --root DIR, or --demo for the embedded demo set")
    if args.out:
        check_writable(args.out)
    prepared = prepare_splits(
        ensure_demo_set() if args.demo else args.root,
        layout=args.layout,
        val=args.val,
        test=args.test,
        seed=args.seed,
        keep_official=args.split == "official",
        skip_bad=args.skip_bad,
        check_images=not args.no_image_check,
        npz_size=args.npz_size,
    )
    _print_splits(prepared, args.demo)
    if args.out:
        write_splits(prepared.table, args.out)
        print(f"\nwrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from toolkit.data.augment import AugmentConfig
    from toolkit.train.config import TrainConfig

    if not args.resume and (args.data is None) == (not args.demo):
        raise ToolkitError("give the training data with --data DIR (or a split file), or --demo")
    options = given(args, TrainConfig)
    options.update(
        data=str(args.data or "demo"),
        input_size=args.input_size or (64 if args.demo else 0),
        augment=AugmentConfig.preset(args.augment),
    )
    config = TrainConfig(**options)
    load_tensorflow(args)
    from toolkit.data.demo import ensure_demo_set
    from toolkit.train.distribute import Cluster
    from toolkit.train.trainer import train

    cluster = Cluster.from_env(**vars(args))  # the flags, else Keras's environment variables
    demo_root = ensure_demo_set() if args.demo else None
    out = train(config, args.out, resume=args.resume, force=args.force, demo_root=demo_root, cluster=cluster)
    print(f"wrote run folder {out}" if cluster.chief else f"process {cluster.process_id}: done; process 0 writes {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from toolkit.export.options import ExportOptions
    from toolkit.export.quantization import Quantization

    quantization = Quantization(**given(args, Quantization), mode=args.quantize or "float32")
    gate = None if args.skip_drift else _gate(args)
    reproduce = ("python -m toolkit " + shlex.join(args.argv),)
    options = ExportOptions(**given(args, ExportOptions), quantization=quantization, gate=gate, reproduce=reproduce)
    load_tensorflow(args, keras_only=False)  # the converter
    from toolkit.drift.gated import export_run

    bundle = export_run(options)
    manifest = json.loads((bundle / "manifest.json").read_text())
    size = manifest["files"]["model.tflite"]["bytes"] / 1e6
    tensors = f"input {manifest['input']['dtype']} {manifest['input']['shape']}, output {manifest['output']['dtype']}"
    print(f"wrote bundle {bundle}: {manifest['quantization']} model.tflite {size:.2f} MB, {tensors}")
    return 0


def _gate(args: argparse.Namespace):
    from toolkit.export.options import Gate

    return Gate(**given(args, Gate))


def cmd_drift(args: argparse.Namespace) -> int:
    from toolkit.drift.measure import export_eval_pack, measure_drift, run_of
    from toolkit.drift.report import markdown, write_report
    from toolkit.export.bundle import Bundle

    bundle = Bundle.open(args.bundle)
    if bundle.demo_warning():
        print(bundle.demo_warning(), flush=True)
    run = run_of(bundle, args.run)
    if args.export_eval_pack:
        out = export_eval_pack(bundle, run, args.split, args.export_eval_pack)
        print(f"wrote eval pack {out}: {args.split} images resized for {bundle.path.name}, listed in eval_pack.csv")
        return 0
    gate = _gate(args)
    load_tensorflow(args)  # the float model here
    report = measure_drift(bundle, run, args.split, gate, args.predictions)
    out = write_report(report, args.out or bundle.path / "drift")
    print(markdown(report))
    print(f"wrote {out}/drift.json, drift.md, drift.png")
    return EXIT_OK if report["gate"]["passed"] else EXIT_GATE_FAILED


def _thread_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ToolkitError(f"--threads takes comma-separated numbers, e.g. 1,2,4; received {text!r}") from None
    if not counts or min(counts) < 1:
        raise ToolkitError(f"--threads must be positive numbers; received {text!r}")
    return counts


def cmd_bench(args: argparse.Namespace) -> int:
    from toolkit.base.io import write_json
    from toolkit.bench.android import bench_adb, import_app_timings
    from toolkit.bench.local import bench_local, table

    threads = _thread_counts(args.threads)
    if (args.gpu or args.nnapi) and not args.adb:
        raise ToolkitError("--gpu and --nnapi choose a delegate on an Android device: add --adb")
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
            args.xnnpack,
            args.gpu,
            args.nnapi,
        )
    else:
        report = bench_local(args.bundle, threads, args.runs, args.warmup, args.xnnpack, args.images)
    print(table(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from toolkit.base.referral import score
    from toolkit.export.bundle import NOT_A_DEVICE, Bundle

    if args.top < 1:
        raise ToolkitError(f"--top must be at least 1, not {args.top}")
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


def cmd_preview(args: argparse.Namespace) -> int:
    """Serve the page until Ctrl-C (a normal way to stop a server: exit 0)."""
    from toolkit.export.bundle import NOT_A_DEVICE, Bundle
    from toolkit.preview.server import start

    if not 0 <= args.port <= 65535:
        raise ToolkitError(f"--port must be 0 to 65535, not {args.port}")
    bundle = Bundle.open(args.bundle)
    bundle.interpreter()  # its tensors checked against the manifest before the page runs it
    server = start(bundle.path, args.port)
    if bundle.demo_warning():
        print(bundle.demo_warning())
    print(f"{NOT_A_DEVICE}\npreview of {bundle.path} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops it)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.shutdown()
    return 0
