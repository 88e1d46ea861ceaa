"""Every bad input gets a one-line error naming the file or value, exit code 2, and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from toolkit.cli import main


def run_data(capsys, root: Path, out: Path, *extra: str) -> tuple[int, list[str], str]:
    code = main(["data", "--root", str(root), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def assert_refused(capsys, root: Path, tmp_path: Path, *expected: str) -> None:
    out = tmp_path / "splits.csv"
    code, err, _ = run_data(capsys, root, out)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0]
    assert not out.exists() and not list(tmp_path.glob(".splits.csv*"))


def first_image(root: Path, label: str) -> Path:
    metadata = pd.read_csv(root / "HAM10000_metadata.csv")
    return root / "images" / f"{metadata[metadata['dx'] == label]['image_id'].iloc[0]}.jpg"


def test_missing_image_file(capsys, ham_subset, tmp_path):
    image = first_image(ham_subset, "mel")
    image.unlink()
    assert_refused(capsys, ham_subset, tmp_path, "image file not found", image.stem)


def test_truncated_jpeg(capsys, ham_subset, tmp_path):
    image = first_image(ham_subset, "bcc")
    image.write_bytes(image.read_bytes()[:2000])
    assert_refused(capsys, ham_subset, tmp_path, "truncated JPEG", str(image))


def test_unreadable_image(capsys, ham_subset, tmp_path):
    image = first_image(ham_subset, "nv")
    image.write_bytes(b"this is not a picture")
    assert_refused(capsys, ham_subset, tmp_path, "unreadable image", str(image))


def test_an_image_with_transparency(capsys, ham_subset, tmp_path):
    image = first_image(ham_subset, "bkl")
    pixels = np.full((30, 40, 4), 128, np.uint8)
    cv2.imwrite(str(image.with_suffix(".png")), pixels)
    image.unlink()
    assert_refused(capsys, ham_subset, tmp_path, "image with transparency", image.stem)


def test_csv_without_expected_columns(capsys, ham_subset, tmp_path):
    csv = ham_subset / "HAM10000_metadata.csv"
    pd.read_csv(csv).rename(columns={"dx": "diagnosis"}).to_csv(csv, index=False)
    assert_refused(capsys, ham_subset, tmp_path, "lacks column(s) dx", str(csv))


def test_unknown_dx_value(capsys, ham_subset, tmp_path):
    csv = ham_subset / "HAM10000_metadata.csv"
    metadata = pd.read_csv(csv)
    metadata.loc[3, "dx"] = "melanomma"
    metadata.to_csv(csv, index=False)
    assert_refused(capsys, ham_subset, tmp_path, "unknown class 'melanomma'", "line 5")


def test_empty_class(capsys, ham_subset, tmp_path):
    csv = ham_subset / "HAM10000_metadata.csv"
    metadata = pd.read_csv(csv)
    metadata[metadata["dx"] != "vasc"].to_csv(csv, index=False)
    assert_refused(capsys, ham_subset, tmp_path, "class 'vasc' has no images")


def test_empty_class_folder(capsys, tmp_path):
    for label in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"):
        (tmp_path / "root" / label).mkdir(parents=True)
    assert_refused(capsys, tmp_path / "root", tmp_path, "class folder", "holds no images")


def test_root_that_does_not_exist(capsys, tmp_path):
    assert_refused(capsys, tmp_path / "nowhere", tmp_path, "does not exist", "nowhere")


def test_unwritable_output_folder(capsys, ham_subset, tmp_path):
    code, err, _ = run_data(capsys, ham_subset, tmp_path / "no" / "such" / "s.csv")
    assert code == 2 and err == [f"error: output folder does not exist: {tmp_path / 'no' / 'such'}"]


def test_skip_bad_lists_what_was_skipped_and_writes_the_rest(capsys, ham_subset, tmp_path):
    missing, truncated = first_image(ham_subset, "mel"), first_image(ham_subset, "bcc")
    missing.unlink()
    truncated.write_bytes(truncated.read_bytes()[:1000])
    out = tmp_path / "splits.csv"
    code, _, stdout = run_data(capsys, ham_subset, out, "--skip-bad")
    assert code == 0 and "skipped 2 bad file(s)" in stdout
    assert missing.stem in stdout and str(truncated) in stdout
    written = set(pd.read_csv(out)["image_id"])
    assert missing.stem not in written and truncated.stem not in written
    assert len(written) == len(pd.read_csv(ham_subset / "HAM10000_metadata.csv")) - 2


def test_the_real_process_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "data", "--root", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().startswith("error: dataset path does not exist")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--demo", "--batch-size", "0"], "batch size must be at least 1, not 0"),
        (["train", "--demo", "--epochs-head", "0", "--epochs-finetune", "0"], "nothing to train"),
        (["train", "--demo", "--epochs-finetune", "-1"], "epochs_finetune must be 0 or more, not -1"),
        (["train", "--demo", "--boundary", "block_99"], "unknown fine-tune boundary 'block_99' for mobilenet_v2"),
        (["export", "--quantize", "float16", "--io", "int8"], "--io int8 applies to int8 only"),
        (["export", "--quantize", "--quantizer", "litert", "--io", "uint8"], "litert quantizer writes int8"),
        (["export", "--name", "../../x"], "--name '../../x' must be a folder name, not a path"),
        (["predict", "--bundle", "b", "--top", "0", "image.jpg"], "--top must be at least 1, not 0"),
        (["bench", "--bundle", "b", "--gpu"], "--gpu and --nnapi choose a delegate on an Android device: add --adb"),
        (["data", "--demo", "--root", "x"], "give either --root x or --demo, not both"),
    ],
)
def test_option_values_and_combinations_are_refused_before_any_work(capsys, tmp_path, argv, message):
    """Checked as the options are read: one line, exit 2, and nothing written (no run, bundle or folder)."""
    out = ["--out", str(tmp_path / "out")] if argv[0] in ("train", "export") else []
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_an_output_path_that_cannot_be_written_is_refused_before_reading_the_data(capsys, ham_subset, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "plain_file").write_text("")
    for out, message in (
        (folder, f"cannot write {folder}: it is a folder"),
        (folder / "plain_file" / "s.csv", f"{folder / 'plain_file'} is a file, not a folder"),
        (Path("/proc/splits.csv"), "cannot write /proc/splits.csv: No such file or directory; choose another place"),
    ):
        code, err, stdout = run_data(capsys, ham_subset, out)
        assert code == 2 and len(err) == 1 and message in err[0] and stdout == "", err
    assert [p.name for p in folder.iterdir()] == ["plain_file"]


def test_an_empty_image_file_is_named(capsys, ham_subset, tmp_path):
    image = first_image(ham_subset, "df")
    image.write_bytes(b"")
    assert_refused(capsys, ham_subset, tmp_path, "empty image file (0 bytes)", str(image))
