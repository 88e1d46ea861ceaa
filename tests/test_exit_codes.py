"""One rule for every command: 0 success, 1 a failed drift gate and nothing else, 2 bad input, 3 a bug, 130 an
interrupt; one line each, a traceback only with ``--debug``; and random bytes wherever a file is read end in
exit 2 with nothing written."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import HAM, REPO, SHIPPED, one_line

import toolkit.cli.commands
from toolkit.base.classes import CLASSES
from toolkit.base.errors import ToolkitError
from toolkit.data.split import run_split
from toolkit.export.stage import read_labels
from toolkit.export.writer import staging_folder

IMAGE = HAM / "images" / "ISIC_0024306.jpg"


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        (
            RuntimeError("boom\nsecond line"),
            3,
            "error: unexpected RuntimeError: boom (a bug in the toolkit; rerun with",
        ),
        (OSError(28, "No space left on device", "/full/x.csv"), 2, "error: No space left on device: /full/x.csv: "),
        (MemoryError(), 2, "error: out of memory: lower --batch-size"),
    ],
    ids=["bug", "disk full", "memory"],
)
def test_an_error_the_toolkit_did_not_plan_for_is_still_one_line(cli, monkeypatch, error, code, expected):
    def fail(args):
        raise error

    monkeypatch.setattr(toolkit.cli.commands, "cmd_predict", fail)
    result = cli("predict", "--bundle", str(SHIPPED), str(IMAGE), check=False)
    assert one_line(result, code).startswith(expected) and "Traceback" not in result.stderr
    debug = cli("predict", "--debug", "--bundle", str(SHIPPED), str(IMAGE), check=False)
    assert debug.returncode == code and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: ")


def test_an_interrupt_exits_130(cli, monkeypatch):
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(toolkit.cli.commands, "cmd_bench", interrupt)
    result = cli("bench", "--bundle", str(SHIPPED), check=False)
    assert result.returncode == 130 and result.stderr.strip() == "interrupted"


def _raises(tree: ast.AST, name: str) -> bool:
    return any(
        isinstance(node, ast.Raise) and node.exc is not None and name in ast.unparse(node.exc)
        for node in ast.walk(tree)
    )


def test_only_the_drift_gate_can_exit_1():
    """Read from the source: GateFailed is raised by the gated export alone, the exit code 1 is returned by the
    drift command's gate alone, and nothing exits with a bare number."""
    raising, returning = [], []
    for path in sorted((REPO / "toolkit").rglob("*.py")):
        tree, name = ast.parse(path.read_text()), str(path.relative_to(REPO))
        if _raises(tree, "GateFailed("):
            raising.append(name)
        if "EXIT_GATE_FAILED" in path.read_text():
            returning.append(name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.exit", "exit", "SystemExit"):
                assert [ast.unparse(a) for a in node.args] in ([], ["main()"], ["EXIT_BAD_INPUT"]), name
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) and name.startswith("toolkit/cli"):
                assert node.value.value == 0, f"{name}:{node.lineno} returns {node.value.value}"
    assert raising == ["toolkit/drift/gated.py"]
    assert returning == ["toolkit/base/errors.py", "toolkit/cli/__init__.py", "toolkit/cli/commands.py"]


def test_export_labels_may_rename_a_class_but_not_move_one(tmp_path):
    renamed = tmp_path / "renamed.txt"
    renamed.write_text("\n".join(["Actinic keratosis", *CLASSES[1:]]) + "\n")
    assert read_labels(renamed, 7)[0] == "Actinic keratosis"
    moved = tmp_path / "moved.txt"
    moved.write_text("\n".join(["nv", *CLASSES[1:5], "akiec", CLASSES[6]]) + "\n")
    with pytest.raises(ToolkitError, match=r"puts 'nv' on output 0, which is akiec: keep the outputs' order"):
        read_labels(moved, 7)


def random_bytes(seed: int) -> bytes:
    """Noise of several kinds: empty, a few bytes, a JPEG header on noise, UTF-8 text that is no format at all."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
    return [b"", noise[:3], b"\xff\xd8\xff\xe0" + noise, noise, "é,\n\x00;{[".encode() * 50][seed % 5]


SEEDS = range(5)


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_as_an_image(cli, tmp_path, ham_subset, seed):
    image = tmp_path / "photo.jpg"
    image.write_bytes(random_bytes(seed))
    one_line(cli("predict", "--bundle", str(SHIPPED), str(image), check=False), 2, str(image))
    victim = next((ham_subset / "images").glob("*.jpg"))
    victim.write_bytes(random_bytes(seed))
    before = files_under(tmp_path)
    result = cli("data", "--root", str(ham_subset), "--out", str(tmp_path / "splits.csv"), check=False)
    one_line(result, 2, str(victim))
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_as_a_csv(cli, tmp_path, ham_subset, seed):
    (ham_subset / "HAM10000_metadata.csv").write_bytes(random_bytes(seed))
    before = files_under(tmp_path)
    result = cli("data", "--root", str(ham_subset), "--out", str(tmp_path / "splits.csv"), check=False)
    one_line(result, 2, "HAM10000_metadata.csv")
    split_file = tmp_path / "splits_in.csv"
    split_file.write_bytes(random_bytes(seed))
    before = files_under(tmp_path)
    result = cli("train", "--data", str(split_file), "--out", str(tmp_path / "runs" / "x"), check=False)
    one_line(result, 2, str(split_file))
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_as_a_manifest(cli, tmp_path, seed):
    bundle = Path(shutil.copytree(SHIPPED, tmp_path / "bundle"))
    (bundle / "manifest.json").write_bytes(random_bytes(seed))
    before = files_under(tmp_path)
    for command in (("predict", str(IMAGE)), ("drift",), ("bench",)):
        one_line(cli(command[0], "--bundle", str(bundle), *command[1:], check=False), 2, str(bundle / "manifest.json"))
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("seed", SEEDS)
def test_random_bytes_as_device_predictions(cli, tmp_path, seed):
    predictions = tmp_path / "predictions.csv"
    predictions.write_bytes(random_bytes(seed))
    before = files_under(tmp_path) | files_under(SHIPPED)
    report = tmp_path / "report"
    result = cli(
        "drift", "--bundle", str(SHIPPED), "--predictions", str(predictions), "--out", str(report), check=False
    )
    one_line(result, 2, str(predictions))
    assert files_under(tmp_path) | files_under(SHIPPED) == before


def test_limit_gives_exactly_that_many_images_per_split_with_every_class():
    """``--limit 300`` once gave 302 validation images (each class rounded on its own)."""
    table = run_split(HAM, limit=300)
    assert table.groupby("split").size().to_dict() == {"test": 300, "train": 300, "val": 300}
    assert (table.groupby("split")["label"].nunique() == len(CLASSES)).all()


def test_a_train_that_fails_before_its_first_epoch_leaves_nothing(cli, tmp_path, ham_subset):
    """No ``runs/x.partial/`` that the next command would blame, and no ``runs/`` folder made for it."""
    cli("data", "--root", str(ham_subset), "--out", str(tmp_path / "splits.csv"))
    broken = next((ham_subset / "images").glob("*.jpg"))
    broken.write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    out = tmp_path / "runs" / "x"
    tiny = (
        "--weights",
        "none",
        "--alpha",
        "0.35",
        "--input-size",
        "32",
        "--epochs-head",
        "1",
        "--epochs-finetune",
        "0",
    )
    result = cli("train", "--data", str(tmp_path / "splits.csv"), *tiny, "--out", str(out), check=False)
    one_line(result, 2, str(broken))
    assert not (tmp_path / "runs").exists()


def test_an_export_removes_the_staging_folders_of_killed_exports(tmp_path):
    dead = subprocess.Popen(["true"])  # a process that has exited: its id names no running process
    dead.wait()
    out = tmp_path / "flutter_assets"
    killed = out / f".x.staging-{dead.pid}-abcd1234"
    running = out / f".y.staging-{os.getpid()}-abcd1234"
    for folder in (killed, running, out / "z"):
        (folder / "model.tflite").parent.mkdir(parents=True)
        (folder / "model.tflite").write_bytes(b"x")
    staging = staging_folder(out / "x")
    assert staging.name.startswith(f".x.staging-{os.getpid()}-") and staging.is_dir()
    assert sorted(p.name for p in out.iterdir()) == sorted([running.name, staging.name, "z"])


def test_a_truncated_model_is_called_truncated_not_missing(cli, tmp_path):
    run = Path(shutil.copytree(REPO / "models" / "ham10000_mobilenet_v2", tmp_path / "run"))
    model = run / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    result = cli("export", "--run", str(run), "--quantize", "float16", "--out", str(tmp_path / "out"), check=False)
    one_line(result, 2, f"{model} is not a .keras archive (truncated or overwritten?)")
    assert not (tmp_path / "out").exists()
