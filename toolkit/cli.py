"""``python -m toolkit``: parses arguments and calls the stage modules; no logic of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit import __version__
from toolkit.errors import ToolkitError


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
    data.set_defaults(run=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
