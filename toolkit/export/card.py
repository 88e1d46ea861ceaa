"""The model card: the bundle README's first half, written from the manifest and the drift report.

Every number in it comes from the run's reference predictions and the gate's measurement of this
very file, so the card and ``manifest.json`` cannot disagree. The plots go in ``card/``, beside the
bundle's files rather than among them, so an app's assets stay small.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.base.classes import CLASSES
from toolkit.base.plots import plot_confusion, plot_reliability

CARD_DIR = "card"
LIMITS = (
    "Trained and tested on HAM10000 only: 200x150 dermoscopy images from two sites (Vienna and Queensland), "
    "mostly fair-skinned patients. Expect lower accuracy on other cameras, other populations and darker skin.",
    "Dermoscopy only: phone photos of skin without a dermatoscope are out of scope.",
    "Seven classes only: a lesion of any other kind is still forced into one of them.",
    "The test split was never used for any choice, but it comes from the same sources as the training data; "
    "the numbers are an upper bound for other sources.",
)
DEMO_LIMITS = ("Trained on synthetic shapes, not dermoscopy: its answers on real images mean nothing.",)


def _metrics_table(reference: dict, exported: dict) -> list[str]:
    lines = ["| test split | float reference | exported |", "|---|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr_macro", "ece"):
        lines.append(f"| {key} | {reference[key]:.4f} | {exported[key]:.4f} |")
    lines += ["", "| class | support | recall (float) | recall (exported) | precision (exported) | F1 (exported) |"]
    lines.append("|---|---|---|---|---|---|")
    for name in CLASSES:
        ref, exp = reference["per_class"][name], exported["per_class"][name]
        lines.append(
            f"| {name} | {exp['support']} | {ref['recall']:.3f} | {exp['recall']:.3f} | "
            f"{exp['precision']:.3f} | {exp['f1']:.3f} |"
        )
    return lines


def _interval(entry: dict) -> str:
    if entry["value"] is None:
        return "n/a"  # no case in the split
    low, high = entry["ci95"]
    return f"{entry['value']:.3f} ({low:.3f}-{high:.3f})"


def _referral_table(referral: dict) -> list[str]:
    lines = [
        "| operating point | refer when | threshold | sensitivity | specificity | PPV | flips vs float |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in referral["test"]:
        exported = point["exported"]
        default = " (default)" if point["name"] == referral["default"] else ""
        lines.append(
            f"| `{point['name']}`{default} | {' + '.join(point['classes'])} >= threshold | {point['threshold']:.4f} | "
            f"{_interval(exported['sensitivity'])} | {_interval(exported['specificity'])} | "
            f"{_interval(exported['ppv'])} | {point['flips']} |"
        )
    return lines


def _data_section(manifest: dict) -> list[str]:
    data = manifest["training_data"]
    if data["demo"]:
        return ["The toolkit's embedded synthetic demo set (coloured shapes, 64x64): **not dermoscopy**."]
    split = data["split"]
    shares = f"{1 - split['val'] - split['test']:.0%}/{split['val']:.0%}/{split['test']:.0%}"
    return [
        f"{data['name']}, under the licence above.",
        f"Split by lesion (`lesion_id`, never by image), stratified by class, seed {split['seed']}, "
        f"{shares} train/val/test; {split['images']['train']:,} / {split['images']['val']:,} / "
        f"{split['images']['test']:,} images. Every choice (epochs, decision rule, thresholds) was made on val.",
    ]


def render_card(manifest: dict, report: dict | None, folder: Path) -> str:
    """The model card as Markdown; writes its two plots into ``folder/card/`` when there is a drift report."""
    size = f"{(folder / 'model.tflite').stat().st_size / 1e6:.2f} MB"
    demo = manifest["training_data"]["demo"]
    views = manifest.get("views", 1)  # bundles written before views existed have one
    averaged = f", averaging {views} mirror views of the image (about {views}x one view's latency)" if views > 1 else ""
    lines = [
        "## Model card",
        "",
        "**Intended use:** research, education and app prototyping. **Not a medical device**: it must not be used to "
        "diagnose, rule out or triage any real lesion. Anyone with a worrying skin lesion should see a doctor.",
        "",
        f"**Model:** {manifest['architecture']} at {manifest['input']['shape'][1]}x{manifest['input']['shape'][1]}"
        f"{averaged}, {manifest['quantization']} (input {manifest['input']['dtype']}, "
        f"output {manifest['output']['dtype']}), `model.tflite` {size}.",
        "",
        "### Data",
        "",
        *_data_section(manifest),
    ]
    if report is not None:
        card = folder / CARD_DIR
        card.mkdir(exist_ok=True)
        reference, exported = report["reference_metrics"], report["exported_metrics"]
        plot_confusion(exported["confusion_matrix"], card / "confusion_matrix.png", f"{manifest['name']}, test split")
        plot_reliability(
            {"float reference": reference, "exported": exported}, card / "reliability.png", "calibration, test split"
        )
        drift = manifest["drift"]
        latency = drift["attempts"][-1]["latency_ms_2_threads"]
        lines += [
            "",
            f"### Test metrics ({report['images']:,} images)",
            "",
            *_metrics_table(reference, exported),
            "",
            "![confusion matrix, exported model](card/confusion_matrix.png)",
            "![reliability diagram](card/reliability.png)",
            "",
            "### Referral operating points",
            "",
            "The app refers a lesion to a dermatologist when a score reaches a threshold: `malignant` sums the "
            "mel, bcc and akiec probabilities, `melanoma` is mel alone. Each threshold was chosen on val for the "
            "sensitivity in its name; below, the exported model on test, with bootstrap 95% intervals. "
            "`flips vs float` counts test images whose referral differs from the float model's.",
            "",
            *_referral_table(manifest["referral"]),
            "",
            "### Drift gate, size and speed",
            "",
            f"Gate {'passed' if drift['passed'] else 'FAILED'} on {drift['images']:,} test images: top-1 agreement "
            f"{drift['top1_agreement']:.2%} with the float reference ({drift['reference']['device']}, "
            f"{drift['reference']['backend']}), balanced accuracy drop {drift['balanced_accuracy_drop_points']:.2f} "
            f"points (report: `drift/drift.md`). `model.tflite` is {size}; {latency:.1f} ms mean per image at 2 "
            "threads (XNNPACK, on the export machine's CPU; measure your phone with the section below).",
        ]
    lines += ["", "### Known limits", "", *[f"- {limit}" for limit in (DEMO_LIMITS if demo else LIMITS)]]
    if manifest.get("reproduce"):
        lines += ["", "### Reproduce", "", "```bash", *manifest["reproduce"], "```"]
    return "\n".join(lines) + "\n"
