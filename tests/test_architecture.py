"""The package's shape and the CLI's manners: small modules, a quick and quiet command line.

``lint-imports`` (in ``make test``) checks the layers; these check what it cannot.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

from toolkit.model.backbones import BACKBONES

HEAVY = ("tensorflow", "keras", "jax", "matplotlib", "sklearn", "scipy", "pandas", "cv2", "ai_edge_litert")
NATIVE_NOISE = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard")


def test_modules_and_functions_stay_small_enough_to_read():
    too_long = []
    for path in sorted((REPO / "toolkit").rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 300:
            too_long.append(f"{path.relative_to(REPO)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}()")
    assert not too_long, too_long


def _loaded_by(*args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the CLI's ``main`` with ``args`` in a fresh interpreter; the heavy libraries it imported."""
    script = (
        "import sys\nfrom toolkit.cli import main\n"
        f"try:\n    main({list(args)!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    return result, ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("train", "--help"),
        ("export", "--help"),
        ("train", "--epochs-head", "many", "--demo", "--out", "unused"),
        ("train", "--arch", "resnet9000", "--demo", "--out", "unused"),
    ],
)
def test_help_and_argument_errors_load_no_heavy_library(args):
    result, loaded = _loaded_by(*args)
    assert loaded == [], loaded
    lines = result.stderr.strip().splitlines()
    if "many" in args:  # a usage error: the command's short usage and the error, not every option
        usage = "usage: python -m toolkit train (--data DIR | --demo) --out DIR [options]"
        assert len(lines) == 2 and lines[0] == usage and "invalid int value: 'many'" in lines[1]
    if "resnet9000" in args:  # a bad value: TrainConfig's one line, before TensorFlow loads
        assert lines == ["error: unknown architecture 'resnet9000'; expected one of " + ", ".join(BACKBONES)]


def test_help_shows_a_plain_description():
    result = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True, cwd=REPO)
    assert "``" not in result.stdout and "Not a medical device" in result.stdout


def test_commands_hide_native_log_lines_unless_verbose(tmp_path):
    """``evaluate`` loads TensorFlow before it finds the run missing: one line of error, none of TensorFlow's."""
    missing = str(tmp_path / "missing")
    quiet = subprocess.run(
        [sys.executable, "-m", "toolkit", "evaluate", "--run", missing], capture_output=True, text=True, cwd=REPO
    )
    assert quiet.returncode == 2 and quiet.stderr.strip().splitlines() == [f"error: run folder not found: {missing}"]
    loud = subprocess.run(
        [sys.executable, "-m", "toolkit", "evaluate", "--verbose", "--run", missing],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert loud.returncode == 2 and any(noise in loud.stderr for noise in NATIVE_NOISE), loud.stderr
