"""The accuracy benchmark: the whole chain on the shared HAM10000 images, scored on the test split.

Split (lesion-grouped, stratified, seed 0, 70/15/15), train a recipe, evaluate the float
model, export int8 (``--selective`` retries when the drift gate fails) and float16, each gated,
score both bundles on the test split with the app's own steps (``app_steps.py``, the code the
contract test holds ``predict`` to), time them at 2 threads, and write
``benchmarks/results/ham10000_<recipe>.json`` with the chain's wall time, the floor and the goals.
Everything in a recipe, the referral thresholds included, was chosen on the validation split.
``--ship`` packs the run into ``models/`` first, so the bundles' manifests name a committed run, and
moves an int8 bundle that misses the shipping floor out of ``--out`` into ``runs/held_back/``.

    .venv/bin/python benchmarks/accuracy_ham10000.py --recipe mobilenet_v2 --out flutter_assets --ship
    .venv/bin/python benchmarks/accuracy_ham10000.py --recipe mobilenet_v2_fast
    .venv/bin/python benchmarks/accuracy_ham10000.py --recipe densenet121
    .venv/bin/python benchmarks/accuracy_ham10000.py --ensemble mobilenet_v2 densenet121

Training runs on whatever Keras backend is set: on a GPU machine with JAX and no TensorFlow, run
``KERAS_BACKEND=jax ... --train-only`` there, bring the run folder back, and run the same command
here without ``--train-only``: an existing run with the same recipe is reused, not retrained. ``--tag gpu`` keeps
such a run, its bundles and its result JSON apart from the recipe's own (``runs/ham10000_<recipe>_gpu/``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

from common import REPO, RESULTS, environment, in_repo, write_result
from recipes import GOALS, RECIPES, TARGETS, config_for
from scoring import bundle_result, check, scores, target_values

from toolkit.base.layout import RunLayout
from toolkit.base.paths import find_portable, portable_path

RUNS = REPO / "runs"
MODELS = REPO / "models"  # shipped runs, committed: what a shipped bundle's manifest names

PROTOCOL = "HAM10000, toolkit lesion-grouped stratified split, seed 0, 70/15/15; scored on test"


def same_recipe(run: Path, wanted) -> bool:
    """Equal configs but for where the data sat, and a split that names this machine's copy of the data.

    A run trained on another machine (a GPU box) recorded its own absolute data path; its ``splits.csv`` names images
    relative to the run folder, so brought back beside the same layout it reads the images here. Options added to
    the toolkit since the run was trained take their defaults, as on ``--resume``.
    """
    from toolkit.data.readers import read_splits
    from toolkit.train.config import TrainConfig

    layout = RunLayout(run)
    saved = TrainConfig.from_json(json.loads(layout.config.read_text()))
    first_image = Path(read_splits(layout.splits).table["path"].iloc[0]).resolve()
    here = first_image.is_relative_to(Path(wanted.data).resolve()) and first_image.exists()
    return here and replace(saved, data="") == replace(wanted, data="")


def portable_config(run: Path) -> dict:
    """The run's config as a committed result should name it: the data relative to the checkout, as a packed run's."""
    config = json.loads(RunLayout(run).config.read_text())
    return {**config, "data": portable_path(find_portable(config["data"], run), RESULTS)}


def training_seconds(run: Path) -> float:
    """The training call's own wall clock, else the sum of its phases (a resumed run loses its start-ups)."""
    seconds = json.loads(RunLayout(run).state.read_text())["seconds"]
    return seconds.get("wall") or sum(seconds.values())


def train_or_reuse(config, name: str) -> tuple[Path, float]:
    """``runs/<name>/``, trained unless it holds ``config`` already, and the seconds earlier calls spent training it."""
    from toolkit.train.trainer import train

    run = RUNS / name
    if RunLayout(run).splits.exists() and same_recipe(run, config):
        print(f"reusing {run} (same recipe)")
        return run, training_seconds(run)
    partial = run.with_name(run.name + ".partial")
    train(config, run, resume=RunLayout(partial).config.exists(), force=True)
    return run, 0.0


def trained_runs(recipe: str, name: str) -> tuple[list[Path], float]:
    """The recipe's run, or one per fine-tune seed when it is a soup, and the seconds earlier calls spent on them."""
    config, seeds = config_for(recipe), RECIPES[recipe].get("finetune_seeds")
    if not seeds:
        run, earlier = train_or_reuse(config, name)
        return [run], earlier
    runs = [train_or_reuse(replace(config, finetune_seed=seed), f"{name}_ft{seed}") for seed in seeds]
    return [run for run, _ in runs], sum(seconds for _, seconds in runs)


def export_and_gate(run: Path, out: Path, name: str, mode: str, reproduce: tuple[str, ...]) -> tuple[Path, bool]:
    """Export with the drift gate (int8: ``--selective`` retries); a rejected bundle is still scored, as rejected."""
    from toolkit.base.errors import GateFailed
    from toolkit.drift.gated import export_run
    from toolkit.export.options import ExportOptions
    from toolkit.export.quantization import Quantization

    options = ExportOptions(
        run=run,
        out=out,
        name=name,
        quantization=Quantization(mode),
        force=True,
        selective=mode == "int8",
        reproduce=reproduce,
    )
    try:
        return export_run(options), True
    except GateFailed as failure:
        print(f"benchmark: {failure}")
        return out / f"{name}.rejected", False


def epoch_history(run: Path) -> list[dict]:
    """Each epoch's learning rate and validation scores: the curves README quotes (best epoch, plateaus)."""
    with open(RunLayout(run).history, newline="") as file:
        return [
            {
                "phase": row["phase"],
                "epoch": int(row["epoch"]),
                "learning_rate": float(f"{float(row['learning_rate']):.3g}"),
                "val_loss": round(float(row["val_loss"]), 4),
                "val_balanced_accuracy": round(float(row["val_balanced_accuracy"]), 4),
            }
            for row in csv.DictReader(file)
        ]


def hold_back(bundle: Path, folder: Path) -> Path:
    """Move a bundle that misses the shipping floor out of the app's assets (its numbers stay in the result)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / bundle.name, ignore_errors=True)
    moved = Path(shutil.move(str(bundle), folder / bundle.name))
    print(f"benchmark: {bundle} misses the shipping floor; moved to {moved}")
    return moved


def benchmark(recipe: str, out: Path, train_only: bool, ship: bool, tag: str) -> None:
    from toolkit.train.runs import open_run, pack_run
    from toolkit.train.soup import soup_runs

    started = time.monotonic()
    arch = RECIPES[recipe]["arch"]
    name = f"ham10000_{recipe}" + f"_{tag}" * bool(tag)
    ingredients, earlier = trained_runs(recipe, name)
    if train_only:
        print(f"trained {', '.join(map(str, ingredients))}; run the same command without --train-only with TensorFlow")
        return
    souped = len(ingredients) > 1
    trained = soup_runs(ingredients, RUNS / name, force=True) if souped else ingredients[0]
    state = json.loads(RunLayout(trained).state.read_text())
    seconds = {phase: round(value, 1) for phase, value in state.get("seconds", {}).items()}
    seconds.update({f"train_{run.name}": round(training_seconds(run), 1) for run in ingredients if souped})
    run = pack_run(trained, MODELS / name, force=True) if ship else trained
    flags = f" --tag {tag}" * bool(tag) + " --ship" * ship
    reproduce = (f".venv/bin/python benchmarks/accuracy_ham10000.py --recipe {recipe} --out {out}{flags}",)
    bundles, folders = {}, {}
    for key, mode, suffix in (("int8", "int8", ""), ("float16", "float16", "_float16")):
        clock = time.monotonic()
        bundle, passed = export_and_gate(run, out, name + suffix, mode, reproduce)
        folders[key] = bundle  # NAME.rejected/ when the gate failed
        seconds[f"export_and_gate_{key}"] = round(time.monotonic() - clock, 1)
        bundles[key] = bundle_result(bundle, run, passed, seconds, key)
    seconds["this_invocation"] = round(time.monotonic() - started, 1)
    chain = seconds["this_invocation"] + earlier  # with the training calls before this one, if runs were reused
    int8 = bundles["int8"]
    result = {
        **environment(),
        "protocol": PROTOCOL,
        "recipe": recipe,
        "tag": tag,
        "arch": arch,
        "config": portable_config(run),
        "weights": RECIPES[recipe]["weights"],
        "trained_with": {"backend": state["backend"], "device": state["device"]},
        "run": in_repo(run),
        "decision": open_run(run).decision,
        "seconds": seconds,
        "chain_minutes": round(chain / 60, 1),
        "history": epoch_history(trained),
        "weight_average": state.get("average"),  # the mean of the last fine-tune epochs, when the recipe asks
        "soup": state.get("soup"),  # the runs averaged and what each scored on val, when the recipe is a soup
        "test_images": int8["scores"]["images"],
        "float": scores(json.loads(RunLayout(trained).metrics.read_text())["test"]),
        "int8": int8["scores"],
        "drift_gate": int8["drift_gate"],
        "bundle": {k: v for k, v in int8.items() if k not in ("scores", "drift_gate")},
        "float16": bundles["float16"],
        "latency_2_threads": int8["latency_2_threads"],
    }
    if arch == "mobilenet_v2":
        values = target_values(int8["scores"], int8["drift_gate"], int8["model_bytes"], chain)
        result["targets"] = check(values, TARGETS)
        result["goals"] = check(values, GOALS)
        missed = [name for name, target in result["targets"].items() if not target["met"]]
        if ship and missed:
            moved = hold_back(folders["int8"], RUNS / "held_back")
            result["held_back"] = {"int8": missed, "to": in_repo(moved)}
    path = write_result(f"{name}.json", result)
    print(json.dumps({k: result[k] for k in ("float", "int8", "chain_minutes")}, indent=1)[:2500])
    print(f"wrote {path}")


def ensemble(recipes: list[str]) -> None:
    from toolkit.train.evaluate import evaluate_runs

    runs = [RUNS / f"ham10000_{recipe}" for recipe in recipes]
    metrics = evaluate_runs(runs, "test")
    result = {
        **environment(),
        "protocol": PROTOCOL,
        "members": recipes,
        "float": scores(metrics),
    }
    path = write_result("ham10000_ensemble.json", result)
    print(json.dumps(result["float"], indent=1)[:1500])
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipe", "--arch", dest="recipe", choices=list(RECIPES), metavar="NAME", help=", ".join(RECIPES)
    )
    parser.add_argument("--ensemble", nargs="+", choices=list(RECIPES), help="score the float ensemble of these runs")
    parser.add_argument("--out", type=Path, default=RUNS / "bundles", help="where the bundle goes")
    parser.add_argument("--train-only", action="store_true", help="train (any backend) and stop before export")
    parser.add_argument("--tag", default="", help="keep the run, bundles and result apart from the recipe's, e.g. gpu")
    parser.add_argument(
        "--ship", action="store_true", help="pack the run into models/ and export the bundles from there (commit both)"
    )
    args = parser.parse_args()
    if args.ensemble:
        ensemble(args.ensemble)
    elif args.recipe:
        benchmark(args.recipe, args.out, args.train_only, args.ship, args.tag)
    else:
        parser.error("give --recipe or --ensemble")


if __name__ == "__main__":
    main()
