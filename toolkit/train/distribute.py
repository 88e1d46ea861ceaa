"""Synchronous data-parallel training with Keras's distribution API on JAX's SPMD runtime.

The model is replicated on every device of a one-axis mesh and each global batch is sharded along that axis,
so a step computes exactly what one device computes on the whole batch: the gradient of the global batch's
mean loss and, for BatchNorm layers that train, the global batch's statistics. Several processes (one per host)
join first with ``keras.distribution.initialize``; each then feeds only its slice of every global batch.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import keras

from toolkit.base.errors import ToolkitError

KERAS_ENV = {  # what keras.distribution.initialize reads when no flag is given
    "coordinator": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "process_id": "KERAS_DISTRIBUTION_PROCESS_ID",
}
AXIS = "batch"


@dataclass(frozen=True)
class Cluster:
    """This process's place among several hosts: launch options (each process has its own), not the run's config."""

    coordinator: str = ""  # HOST:PORT of process 0; "" with one process
    num_processes: int = 1
    process_id: int = 0
    coordinator_timeout: float = 30.0  # seconds to reach the coordinator before giving up

    def __post_init__(self) -> None:
        if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
            raise ToolkitError(
                f"--process-id {self.process_id} of --num-processes {self.num_processes}: the id must be 0 to "
                f"{max(self.num_processes, 1) - 1}"
            )
        if self.num_processes > 1 and not _address(self.coordinator):
            raise ToolkitError(f"--coordinator must be HOST:PORT of process 0, not {self.coordinator!r}")
        if self.coordinator_timeout <= 0:
            raise ToolkitError(f"--coordinator-timeout must be positive seconds, not {self.coordinator_timeout}")

    @property
    def chief(self) -> bool:
        """Process 0 alone writes the run folder, checkpoints and plots."""
        return self.process_id == 0

    @classmethod
    def from_env(cls, **given) -> Cluster:
        """The flags given, else Keras's environment variables (the first job address), else one process."""
        values = {}
        for name, variable in KERAS_ENV.items():
            value = given[name] if given.get(name) is not None else os.environ.get(variable)
            if value not in (None, ""):
                values[name] = value.split(",")[0] if name == "coordinator" else _integer(variable, value)
        return cls(**values, coordinator_timeout=given.get("coordinator_timeout") or cls.coordinator_timeout)


def _integer(name: str, value) -> int:
    try:
        return int(value)
    except ValueError:
        raise ToolkitError(f"{name} must be a whole number, not {value!r}") from None


def _address(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() and 0 < int(port) < 65536 else None


def _wait_for(host: str, port: int, timeout: float) -> None:
    """Connect to the coordinator until it answers; JAX itself would wait five minutes for one that never will."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ToolkitError(
                    f"cannot reach the coordinator {host}:{port} within {timeout:g} s ({error.strerror or error}): "
                    "start process 0 first, or check --coordinator and the network"
                ) from None
            time.sleep(0.5)


def join(cluster: Cluster) -> None:
    """Join the other processes, before anything touches a device; nothing to do for one process."""
    if cluster.num_processes == 1:
        return
    if keras.backend.backend() != "jax":
        raise ToolkitError("training over several processes runs under KERAS_BACKEND=jax: set it, or train in one")
    host, port = _address(cluster.coordinator)
    if not cluster.chief:
        _wait_for(host, port, cluster.coordinator_timeout)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes need it; GPUs use NCCL
    keras.distribution.initialize(f"{host}:{port}", cluster.num_processes, cluster.process_id)


@dataclass(frozen=True)
class Placement:
    """Where a run trains: the mesh's devices (every process's) and how the global batch splits over them."""

    devices: tuple[str, ...]
    global_batch: int
    processes: int = 1
    process_id: int = 0

    @property
    def distributed(self) -> bool:
        return len(self.devices) > 1

    @property
    def chief(self) -> bool:
        return self.process_id == 0

    def record(self) -> dict:
        """What ``config.json`` records beside the config."""
        return {
            "devices": len(self.devices),
            "processes": self.processes,
            "per_device_batch": self.global_batch // len(self.devices),
            "per_process_batch": self.global_batch // self.processes,
            "mesh": {"shape": [len(self.devices)], "axis_names": [AXIS]},
        }


def _name(device) -> str:
    return f"{device.platform}:{device.id} ({device.device_kind}, process {device.process_index})"


def place(devices: str, global_batch: int) -> Placement:
    """The devices ``--devices`` asks for, checked; sets Keras's ``DataParallel`` when there is more than one."""
    from toolkit.base.runtime import training_device

    if keras.backend.backend() != "jax":
        if devices not in ("all", "1"):
            raise ToolkitError(
                f"--devices {devices} needs KERAS_BACKEND=jax: the TensorFlow backend trains on one device here; "
                "run with KERAS_BACKEND=jax, or drop --devices"
            )
        return Placement((training_device(),), global_batch)
    import jax

    local = jax.local_devices()
    wanted = len(local) if devices == "all" else int(devices)
    if wanted > len(local):
        cpu = local[0].platform == "cpu"
        hint = " (XLA_FLAGS=--xla_force_host_platform_device_count=N splits a CPU)" if cpu else ""
        raise ToolkitError(
            f"--devices {devices}: this process sees {len(local)} {local[0].platform} device(s){hint}: "
            f"pass --devices {len(local)} or fewer"
        )
    mesh = [d for p in range(jax.process_count()) for d in [d for d in jax.devices() if d.process_index == p][:wanted]]
    if global_batch % len(mesh):
        raise ToolkitError(
            f"--batch-size {global_batch} is the global batch and does not divide by the {len(mesh)} devices: "
            f"pass a multiple of {len(mesh)}, e.g. {len(mesh) * max(1, round(global_batch / len(mesh)))}"
        )
    if len(mesh) > 1:
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(
                device_mesh=keras.distribution.DeviceMesh((len(mesh),), [AXIS], mesh),
                auto_shard_dataset=False,  # each process already feeds only its slice (ImageBatches' shard)
            )
        )
    return Placement(tuple(_name(d) for d in mesh), global_batch, jax.process_count(), jax.process_index())


def release() -> None:
    """Back to one device: what runs after training (averaging, the reference) is local to process 0."""
    keras.distribution.set_distribution(None)


@contextlib.contextmanager
def one_device() -> Iterator[None]:
    """No distribution inside: what is built or run here stays on the default device."""
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


class LocalCopy:
    """The model's weights on one device of this process: for predictions, and for what process 0 saves.

    A sharded ``predict`` would need every batch to divide by the device count, and its answers would be spread
    over processes; reading or saving replicated weights may take all processes at once. So every process
    copies the weights at the same points (:meth:`sync`), and process 0 saves the copy.
    """

    def __init__(self, model: keras.Model, placement: Placement):
        self.model, self.distributed = model, placement.distributed
        if self.distributed:
            with one_device():
                self.copy = keras.models.clone_model(model)
        else:
            self.copy = model

    def sync(self) -> keras.Model:
        """The copy, with the model's current weights; every process calls this at the same point."""
        if self.distributed:
            with one_device():
                self.copy.set_weights(self.model.get_weights())
        return self.copy

    def predict(self, images, desc: str):
        from toolkit.model.classifier import predict

        model = self.sync()
        with one_device():
            return predict(model, images, desc)
