"""The drift report as people read it: ``drift.json``, ``drift.md`` and ``drift.png``, and the manifest's summary."""

from __future__ import annotations

from pathlib import Path

from toolkit.base.errors import ToolkitError
from toolkit.base.io import write_json, write_text
from toolkit.base.plots import draw_confusion, pyplot
from toolkit.drift.measure import DriftReport


def summary(report: DriftReport) -> dict:
    """The few numbers that go into the bundle's manifest."""
    total = report["total"]
    return {
        "split": report["split"],
        "images": report["images"],
        "passed": report["gate"]["passed"],
        "failures": report["gate"]["failures"],
        "top1_agreement": round(total["top1_agreement"], 4),
        "balanced_accuracy_drop_points": round(total["drop_points"]["balanced_accuracy"], 2),
        "max_recall_drop_points": round(max(total["recall_drop_points"].values(), default=0.0), 2),
        "mean_abs_prob_diff": round(total["mean_abs_prob_diff"], 4),
        "referral_flips": {point["name"]: point["flips"] for point in report.get("referral", [])},
        "reference": report["reference"],
        "app_path_top1_agreement": {
            name: round(p["top1_agreement"], 4) for name, p in report.get("app_paths", {}).items()
        },
        "app_paths_skipped": report.get("app_paths_skipped", {}),
    }


def markdown(report: DriftReport) -> str:
    total, gate = report["total"], report["gate"]
    verdict = "PASSED" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"])
    lines = [
        f"# Drift report: {Path(report['bundle']).name} ({report['quantization']}), {report['split']} split",
        "",
        f"Gate {verdict}. Thresholds: top-1 agreement >= {gate['min_agreement']:.0%}, balanced accuracy drop <= "
        f"{gate['max_balanced_accuracy_drop']} points, per-class recall drop <= {gate['max_recall_drop']} points, "
        f"referral sensitivity change <= {gate['max_sensitivity_drop']} points.",
        "",
        f"{report['images']} images. Reference: float model on {report['reference']['device']} "
        f"({report['reference']['backend']}). Here: {report['here']['device']} ({report['here']['backend']}). "
        f"Exported: {report['exported']}.",
        "",
        "| | top-1 agreement | mean abs prob diff | max abs prob diff | mean KL | balanced accuracy drop (points) |",
        "|---|---|---|---|---|---|",
    ]
    rows = [
        (report["device_drift"], "reference -> float here (backend/device)"),
        (report["quantization_drift"], "float here -> exported (quantization)"),
        (report["total"], "reference -> exported (gated)"),
        *[(part, f"reference -> exported through the app's steps, {name} (gated)")
          for name, part in report.get("app_paths", {}).items()],
    ]  # fmt: skip
    for part, title in rows:
        lines.append(
            f"| {title} | {part['top1_agreement']:.2%} | {part['mean_abs_prob_diff']:.4f} | "
            f"{part['max_abs_prob_diff']:.4f} | {part['mean_kl_divergence']:.4f} | "
            f"{part['drop_points']['balanced_accuracy']:.2f} |"
        )
    lines += [
        f"| the app's steps, {name}: not run here ({why}) | | | | | |"
        for name, why in report.get("app_paths_skipped", {}).items()
    ]
    lines += ["", "| metric | reference | exported | drop (points) |", "|---|---|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        lines.append(
            f"| {key} | {total['before'][key]:.4f} | {total['after'][key]:.4f} | {total['drop_points'][key]:.2f} |"
        )
    lines.append(f"| ece | {total['before']['ece']:.4f} | {total['after']['ece']:.4f} | |")
    lines += [
        "",
        "Recall drop per class (points): "
        + ", ".join(f"{name} {drop:+.2f}" for name, drop in total["recall_drop_points"].items()),
    ]
    lines += _detail_lines(report)
    return "\n".join(lines) + "\n"


def _detail_lines(report: DriftReport) -> list[str]:
    """Referral points, the changed images by class and the worst int8 layers, when the report has them."""
    lines = []
    if report.get("referral"):
        lines += [
            "",
            "| referral point | threshold | sensitivity reference | sensitivity exported | decisions flipped |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['name']} | {p['threshold']:.4f} | {p['reference']['sensitivity']['value']} | "
            f"{p['exported']['sensitivity']['value']} | {p['flips']} of {p['exported']['images']} |"
            for p in report["referral"]
        ]
    if report["changed_by_class"]:
        changed = sum(c["images"] for c in report["changed_by_class"])
        lines += ["", f"Top-1 changed on {changed} image(s), by true class:", ""]
        lines += [
            f"- {c['label']}: {c['reference']} -> {c['exported']} ({c['images']})" for c in report["changed_by_class"]
        ]
    if report.get("layers"):
        lines += ["", "Layers with the largest int8 error (RMSE / scale, TensorFlow's quantization debugger):", ""]
        lines += [
            f"- {layer['op']} {layer['tensor'].split(';')[0]}: {layer['rmse_over_scale']:.3f}"
            for layer in report["layers"]
        ]
    return lines


def plot(report: DriftReport, path: Path) -> None:
    """Both confusion matrices and the per-class recall drops, side by side."""
    plt = pyplot()
    total = report["total"]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    draw_confusion(axes[0], total["confusion_before"], "reference (float)", fontsize=7)
    draw_confusion(axes[1], total["confusion_after"], "exported", fontsize=7)
    drops = total["recall_drop_points"]
    colours = ["tab:red" if d > report["gate"]["max_recall_drop"] else "tab:grey" for d in drops.values()]
    axes[2].bar(list(drops), list(drops.values()), color=colours)
    axes[2].axhline(report["gate"]["max_recall_drop"], color="tab:red", linestyle="--", linewidth=1, label="gate")
    axes[2].set(title="recall drop, reference -> exported (points)", ylabel="points")
    axes[2].legend()
    verdict = "gate passed" if report["gate"]["passed"] else "gate FAILED"
    figure.suptitle(f"{Path(report['bundle']).name}, {report['split']} split: {verdict}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: DriftReport, out: Path) -> Path:
    """``drift.json``, ``drift.md`` and ``drift.png`` in ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "drift.json", report)
        write_text(out / "drift.md", markdown(report))
    except OSError as error:
        raise ToolkitError(f"cannot write the drift report to {out}: {error.strerror}") from None
    plot(report, out / "drift.png")
    return out
