"""README's accuracy tables, generated from the committed result JSONs (never typed by hand).

.venv/bin/python benchmarks/results_table.py            # print the tables
.venv/bin/python benchmarks/results_table.py --readme   # replace them in README.md between the markers
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- accuracy-results:start -->", "<!-- accuracy-results:end -->"
COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr_macro", "ece")


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _recipe_results() -> list[dict]:
    """One result per benchmarked recipe (results written before recipes had names are named by their arch)."""
    results = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("ham10000_*.json"))]
    return [{"recipe": result["arch"], **result} for result in results if "arch" in result]


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
            f"{result['recipe']}: {config['input_size']}px, {config['epochs_finetune']} fine-tune epochs, "
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
    ensemble = _load("ham10000_ensemble.json")
    if ensemble:
        lines.append(_row("ensemble: " + " + ".join(ensemble["members"]), "float", ensemble["float"], ["", "", ""]))
    return split + "\n".join(lines)


def targets_table() -> str:
    """The int8 MobileNetV2 targets, a column for each MobileNetV2 recipe."""
    results = [result for result in _recipe_results() if "targets" in result]
    if not results:
        return ""
    lines = [
        "| int8 MobileNetV2 target | required | " + " | ".join(result["recipe"] for result in results) + " |",
        "|---|---|" + "---|" * len(results),
    ]
    for name, entry in results[0]["targets"].items():
        cells = [
            f"{result['targets'][name]['value']} ({'met' if result['targets'][name]['met'] else '**not met**'})"
            for result in results
        ]
        lines.append(f"| {name} | {entry['target']} | " + " | ".join(cells) + " |")
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


def tables() -> str:
    parts = [accuracy_table(), targets_table(), ablation_table()]
    return "\n\n".join(part for part in parts if part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--readme", action="store_true", help=f"rewrite the tables in README.md between {START} and {END}"
    )
    args = parser.parse_args()
    text = tables()
    if not args.readme:
        print(text)
        return
    readme = README.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the markers {START} and {END}")
    head, rest = readme.split(START, 1)
    README.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")
    print(f"updated {README}")


if __name__ == "__main__":
    main()
