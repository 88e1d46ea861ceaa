"""How fast and how quietly the CLI answers, against an earlier commit, side by side in one run.

Each command runs in a fresh interpreter, the two trees interleaved (A B A B ...) so a busy machine
slows both alike; the median of the runs is reported. The earlier tree is checked out in a temporary
git worktree and run with the same interpreter. Also counted: native log lines (TensorFlow's, absl's)
on stderr of a command that loads TensorFlow and then fails on a missing run folder.

    .venv/bin/python benchmarks/cli_startup.py --baseline c5a89d0   # writes benchmarks/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, environment, write_result

COMMANDS = {
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "bad value (--arch resnet9000)": ["train", "--arch", "resnet9000", "--demo", "--out", "unused"],
    "usage error (--epochs-head many)": ["train", "--epochs-head", "many", "--demo", "--out", "unused"],
}
NOISY = ["evaluate", "--run", "no-such-run"]  # loads TensorFlow, then fails on the missing run
NATIVE_NOISE = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "rebuild TensorFlow")


def _run(tree: Path, args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=tree, env=env)
    return time.perf_counter() - start, done


def measure(trees: dict[str, Path], repeats: int) -> dict:
    seconds = {name: {label: [] for label in COMMANDS} for name in trees}
    for _ in range(repeats):
        for label, args in COMMANDS.items():
            for name, tree in trees.items():
                seconds[name][label].append(_run(tree, args)[0])
    result = {}
    for name, tree in trees.items():
        _, noisy = _run(tree, NOISY)
        _, usage_error = _run(tree, COMMANDS["usage error (--epochs-head many)"])
        result[name] = {
            "median_seconds": {label: round(statistics.median(times), 3) for label, times in seconds[name].items()},
            "usage_error_stderr_lines": len(usage_error.stderr.splitlines()),
            "native_log_lines": sum(any(n in line for n in NATIVE_NOISE) for line in noisy.stderr.splitlines()),
            "failing_command_stderr_lines": len(noisy.stderr.strip().splitlines()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="c5a89d0", help="the earlier commit to compare with")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline], cwd=REPO, check=True)
        try:
            measured = measure({"baseline": baseline, "this_tree": REPO}, args.repeats)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=True)
    result = {**environment(), "baseline": args.baseline, "repeats": args.repeats, "trees": measured}
    path = write_result("cli_startup.json", result)
    for name, numbers in measured.items():
        print(name, numbers)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
