"""Data-parallel training on JAX (issue 23), on CPU: XLA_FLAGS splits it into 4 devices, set before JAX is imported,
so each case runs in a subprocess (``distributed_worker.py``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HAM, REPO, one_line

WORKER = Path(__file__).with_name("distributed_worker.py")
TINY = ["--data", str(HAM), "--arch", "mobilenet_v2", "--alpha", "0.35", "--input-size", "32", "--weights",
        "none", "--epochs-head", "0", "--epochs-finetune", "1", "--limit", "32", "--batch-size", "16",
        "--decision", "none"]  # fmt: skip


def jax_env(keras_home: Path, devices: int = 4) -> dict:
    flags = f"--xla_force_host_platform_device_count={devices}"
    return dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", XLA_FLAGS=flags, KERAS_HOME=str(keras_home))


def run(args: list, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def same(tmp_path_factory, keras_home) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("distributed")
    result = run([sys.executable, str(WORKER), "same", str(HAM), str(out)], jax_env(keras_home))
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]), out


def test_four_devices_train_as_one_with_the_batchnorm_fix(same):
    """Global batch 16 on 4 devices (4 each) against 1 device: the same loss curve and weights, and the frozen
    statistics bit-identical to ImageNet's."""
    found = same[0]["imagenet"]
    assert found["loss"]["4"] == pytest.approx(found["loss"]["1"], rel=1e-5)
    assert found["max_weight_diff"] < 1e-6
    assert found["max_moving_diff"] == 0.0 and found["moving_equal_pretrained"]
    assert found["config"] == {"devices": 4, "processes": 1, "per_device_batch": 4, "per_process_batch": 16,
                               "mesh": {"shape": [4], "axis_names": ["batch"]}}  # fmt: skip
    assert found["devices"] == [f"cpu:{i} (cpu, process 0)" for i in range(4)]
    assert found["reference_device"].startswith("4 devices: cpu:0 (cpu, process 0); cpu:1")


def test_four_devices_train_batchnorm_on_the_global_batch(same):
    """BatchNorm training (--weights none): its statistics are those of the global batch of 16, not of each device's
    4 (measured: moving statistics within 3e-6 of one device's; Adam's sign-like steps let the weights part by at most
    about the learning rate, 1e-5)."""
    found = same[0]["none"]
    assert found["loss"]["4"] == pytest.approx(found["loss"]["1"], rel=1e-3)
    assert found["max_moving_diff"] < 1e-4
    assert found["max_weight_diff"] < 1e-4


def test_the_four_device_run_exports_through_the_drift_gate(same, cli, tmp_path):
    """Its reference.npz (made on 4 devices under JAX) is the float reference like any other."""
    result = cli("export", "--run", str(same[1] / "imagenet_4"), "--out", str(tmp_path), "--name", "four")
    assert "drift gate (as asked)" in result.stdout and ": passed" in result.stdout
    manifest = json.loads((tmp_path / "four" / "manifest.json").read_text())
    assert manifest["drift"]["passed"] and manifest["drift"]["reference"]["backend"] == "jax"
    assert manifest["drift"]["reference"]["device"].startswith("4 devices:")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def twins(flags: list[str], env: dict) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, str(WORKER), "twin", *flags, "--process-id", str(i)], env=env, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (0, 1)
    ]  # fmt: skip


def test_two_processes_train_as_one_and_resume_after_they_die(tmp_path, keras_home):
    """Two real processes (JAX's CPU collectives over gloo), a device each, killed after the first of three epochs
    (as a job scheduler does when one dies); restarted with --resume, both restore process 0's checkpoint, finish
    with the same weights after every phase, and leave one run folder, written by process 0, whose history has each
    epoch once."""
    out = tmp_path / "runs" / "twin"
    flags = [*TINY, "--epochs-finetune", "3", "--out", str(out), "--num-processes", "2"]
    env = jax_env(keras_home, devices=1)
    first = twins([*flags, "--coordinator", f"127.0.0.1:{free_port()}"], env)
    for line in first[0].stdout:
        if line.startswith("finetune epoch 1:"):
            break
    for process in first:
        process.kill()
        process.wait()
    assert out.with_name("twin.partial").is_dir() and not out.exists()
    second = twins([*flags, "--coordinator", f"127.0.0.1:{free_port()}", "--resume"], env)
    results = [process.communicate(timeout=600) for process in second]
    for process, (_, stderr) in zip(second, results, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    digests = [[line for line in stdout.splitlines() if line.startswith("WEIGHTS")] for stdout, _ in results]
    assert digests[0] == digests[1] and digests[0][-1].startswith("WEIGHTS finetune ")
    assert sorted(p.name for p in out.parent.iterdir()) == ["twin"]
    assert json.loads((out / "config.json").read_text())["distribution"]["processes"] == 2
    assert "process 1: done; process 0 writes" in results[1][0]
    history = (out / "history.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in history[1:]] == [["finetune", "1"], ["finetune", "2"], ["finetune", "3"]]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--devices", "8"], "--devices 8: this process sees 4 cpu device(s)"),
        (["--devices", "4", "--batch-size", "10"], "--batch-size 10 is the global batch and does not divide by the 4"),
        (["--devices", "two"], "--devices takes all or a positive number"),
    ],
)
def test_impossible_device_requests_fail_in_one_line(flags, fragment, tmp_path, keras_home):
    out = tmp_path / "runs" / "x"
    one_line(
        run([sys.executable, "-m", "toolkit", "train", *TINY, *flags, "--out", str(out)], jax_env(keras_home)),
        2,
        fragment,
    )
    assert not out.parent.exists()


def test_an_unreachable_coordinator_fails_in_seconds(tmp_path, keras_home):
    out, started = tmp_path / "runs" / "x", time.monotonic()
    flags = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2", "--process-id", "1"]
    command = [sys.executable, "-m", "toolkit", "train", *TINY, *flags, "--coordinator-timeout", "3"]
    result = run([*command, "--out", str(out)], jax_env(keras_home))
    one_line(result, 2, "cannot reach the coordinator 127.0.0.1:")
    assert time.monotonic() - started < 60 and not out.parent.exists()


def test_devices_under_tensorflow_name_jax(tmp_path, cli):
    out = tmp_path / "runs" / "x"
    result = cli("train", *TINY, "--devices", "2", "--out", str(out), check=False)
    one_line(result, 2, "--devices 2 needs KERAS_BACKEND=jax")
    assert not out.parent.exists()
