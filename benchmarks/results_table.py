"""README's shipped table and docs/results.md's accuracy tables, from the committed result JSONs (never typed by hand).

.venv/bin/python benchmarks/results_table.py            # print the tables
.venv/bin/python benchmarks/results_table.py --readme   # replace them between the markers in both files (or --docs)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import REPO, RESULTS

README = REPO / "README.md"  # the shipped table
RESULTS_PAGE = REPO / "docs" / "results.md"  # the accuracy, floor and ablation tables
START, END = "<!-- accuracy-results:start -->", "<!-- accuracy-results:end -->"
SHIPPED_START, SHIPPED_END = "<!-- shipped:start -->", "<!-- shipped:end -->"
SHIPPED_RECIPE = "mobilenet_v2"  # the recipe whose bundles are in flutter_assets/
COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr_macro", "ece")


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _recipe_results() -> list[dict]:
    """One result per benchmarked recipe and tag, labelled (results from before recipes had names are named by arch)."""
    results = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("ham10000_*.json"))]
    results = [{"recipe": result["arch"], **result} for result in results if "arch" in result]
    return [{**result, "label": _label(result)} for result in results]


def _label(result: dict) -> str:
    """The recipe, and the tag of a run kept apart from it (``--tag gpu``: trained on a GPU machine)."""
    return result["recipe"] + (f" ({result['tag']})" if result.get("tag") else "")


def _row(label: str, model: str, scores: dict, extra: list[str]) -> str:
    return "| " + " | ".join([label, model, *(f"{scores[c]:.3f}" for c in COLUMNS), *extra]) + " |"


def accuracy_table() -> str:
    header = (
        "| model | | accuracy | balanced acc. | macro-F1 | AUC (OvR) | ECE | size (MB) | 2-thread ms | drift gate |"
    )
    lines = [header, "|" + "---|" * 10]
    split = ""
    for result in _recipe_results():
        split = f"{result['protocol']} ({result['test_images']} images); int8 scored through the app's steps.\n\n"
        config, bundle, gate = result["config"], result["bundle"], result["drift_gate"]
        label = (
            f"{result['label']}: {config['input_size']}px, {config['epochs_finetune']} fine-tune epochs, "
            f"weights {result['weights']}"
        )
        lines.append(_row(label, "float", result["float"], ["", "", ""]))
        verdict = (
            f"{'passed' if gate['passed'] else 'FAILED'}: {gate['top1_agreement']:.1%} top-1 agreement, "
            f"balanced-accuracy drop {gate['balanced_accuracy_drop_points']:+.2f} pt"
        )
        exported = bundle["quantization"] + (
            f", {bundle['float_layers']} layers float" if bundle["float_layers"] else ""
        )
        size, latency = f"{bundle['model_bytes'] / 1e6:.2f}", f"{result['latency_2_threads']['mean_ms']:.2f}"
        lines.append(_row("", exported, result["int8"], [size, latency, verdict]))
        if "float16" in result:
            half, gate = result["float16"], result["float16"]["drift_gate"]
            verdict = f"{'passed' if gate['passed'] else 'FAILED'}: {gate['top1_agreement']:.1%} top-1 agreement"
            extra = [f"{half['model_bytes'] / 1e6:.2f}", f"{half['latency_2_threads']['mean_ms']:.2f}", verdict]
            lines.append(_row("", "float16", half["scores"], extra))
    ensemble = _load("ham10000_ensemble.json")
    if ensemble:
        lines.append(_row("ensemble: " + " + ".join(ensemble["members"]), "float", ensemble["float"], ["", "", ""]))
    return split + "\n".join(lines)


def targets_table() -> str:
    """The shipping floor and the goals of the int8 MobileNetV2 bundle, a column for each recipe that measured them."""
    results = [result for result in _recipe_results() if "goals" in result]
    if not results:
        return ""
    lines = [
        "| int8 MobileNetV2 | required | " + " | ".join(result["label"] for result in results) + " |",
        "|---|---|" + "---|" * len(results),
    ]
    for kind in ("targets", "goals"):
        for name, entry in results[0][kind].items():
            cells = [
                f"{result[kind][name]['value']} ({'met' if result[kind][name]['met'] else '**not met**'})"
                for result in results
            ]
            label = f"{name} (floor)" if kind == "targets" else f"{name} (goal)"
            lines.append(f"| {label} | {entry['target']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_table() -> str:
    result = _load("ablation_ham10000.json")
    if not result:
        return ""
    lines = ["| variant | changed | accuracy | balanced acc. | macro-F1 | ECE |", "|---|---|---|---|---|---|"]
    for name, variant in result["variants"].items():
        changed = ", ".join(f"{k}={v}" for k, v in variant["changed"].items()) or "(the shortened recipe)"
        test = variant["test"]
        lines.append(
            f"| {name} | {changed} | {test['accuracy']:.3f} | {test['balanced_accuracy']:.3f} | "
            f"{test['macro_f1']:.3f} | {test['ece']:.3f} |"
        )
    return "\n".join(lines)


def shipped_table() -> str:
    """README's first screen: the shipped bundles' test numbers, from the shipping recipe's result JSON."""
    result = _load(f"ham10000_{SHIPPED_RECIPE}.json")
    if not result or "float16" not in result:
        return ""
    lines = [
        "| bundle (test split, 1,509 images) | accuracy | balanced acc. | macro-F1 | size "
        "| refer at `malignant_sens95`: sensitivity / specificity | model card |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, bundle in (("float16", result["float16"]), ("int8", result["bundle"] | {"scores": result["int8"]})):
        scores, path = bundle["scores"], bundle["path"]
        point = next(p for p in bundle["referral"] if p["name"] == "malignant_sens95")["exported"]
        shipped = (REPO / path).is_dir()
        name = f"`{path}` ({key})" if shipped else f"{key}, **not shipped** (misses the floor in docs/results.md)"
        card = f"[README]({path}/README.md)" if shipped else ""
        lines.append(
            f"| {name} | {scores['accuracy']:.3f} | {scores['balanced_accuracy']:.3f} | "
            f"{scores['macro_f1']:.3f} | {bundle['model_bytes'] / 1e6:.2f} MB | "
            f"{point['sensitivity']['value']:.3f} / {point['specificity']['value']:.3f} | {card} |"
        )
    machine = result["machine"]
    lines += [
        "",
        f"Reproduce with `.venv/bin/python {result['command'].removeprefix('python ')}`: "
        f"{result['chain_minutes']:.0f} minutes from a "
        f"clean checkout on {machine['cores']} cores ({machine['cpu']}, {', '.join(machine['cpu_features'])}), "
        f"{result['date']}.",
    ]
    return "\n".join([*lines, *levers_line()])


LEVERS = {  # variant in train_levers.json: what README calls it
    "finetune_144": "at 144 px",
    "finetune_112": "at 112 px",
    "finetune_176_from_block_3": "from `block_3` at 176 px (the stem and first three blocks frozen)",
    "finetune_176_bfloat16": "Keras's `mixed_bfloat16` policy at 176 px",
    "threads_intra2_inter1": "2 intra-op and 1 inter-op threads",
    "threads_intra1_inter1": "1 and 1",
}


def levers_line() -> list[str]:
    """What each training lever bought, from ``train_levers.json`` (one run, side by side)."""
    result = _load("train_levers.json")
    if not result:
        return []
    variants = result["variants"]
    speed = [f"{name} {variants[key]['images_per_second']:.1f} ({variants[key]['speed_vs_finetune_176']:.2f}x)"
             for key, name in LEVERS.items()]  # fmt: skip
    cached, through = variants["head_cached"], variants["head_through_backbone"]
    machine = result["machine"]
    return [
        "",
        f"What each training lever bought, in images per second of a training step measured side by side in one run "
        f"(`benchmarks/results/train_levers.json`, {result['date']}, {machine['cores']} cores, {machine['cpu']}: "
        f"{', '.join(machine['cpu_features'])}): the whole backbone's fine-tune at 176 px "
        f"{variants['finetune_176']['images_per_second']:.1f}; {'; '.join(speed)}; the head phase on cached backbone "
        f"features {cached['images_per_second']:.1f} against {through['images_per_second']:.1f} through the backbone "
        f"({cached['images_per_second'] / through['images_per_second']:.2f}x, the recipe uses it).",
    ]


def _replace(path: Path, start: str, end: str, block: str) -> str:
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path.relative_to(REPO)} lacks the markers {start} and {end}")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}"


def tables() -> str:
    parts = [accuracy_table(), targets_table(), ablation_table()]
    return "\n\n".join(part for part in parts if part)


def regenerated() -> dict[Path, str]:
    """README.md and docs/results.md as they should read, both checked for their markers before either is written."""
    return {
        README: _replace(README, SHIPPED_START, SHIPPED_END, shipped_table()),
        RESULTS_PAGE: _replace(RESULTS_PAGE, START, END, tables()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--readme",
        "--docs",
        dest="write",
        action="store_true",
        help=f"rewrite the tables between their markers: README.md's {SHIPPED_START} block and "
        f"docs/results.md's {START} block",
    )
    args = parser.parse_args()
    if not args.write:
        print(f"{shipped_table()}\n\n{tables()}")
        return
    for path, updated in regenerated().items():
        path.write_text(updated)
        print(f"updated {path}")


if __name__ == "__main__":
    main()
