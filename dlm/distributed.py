"""Multi-process start-up: `jax.distributed.initialize` from flags or the environment.

Three ways a run gets its processes, checked in this order:

* explicit: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every
  process (all three, or none);
* the environment: `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`,
  read here; what is missing JAX detects, e.g. on Kubernetes), or a Cloud TPU, SLURM or Open
  MPI job that JAX's own detection recognises (`jax._src.clusters`) with more than one
  process;
* otherwise one process, and nothing is initialised.

On CPU the processes exchange data through gloo (`jax_cpu_collectives_implementation`), which is
how several local processes with `--xla_force_host_platform_device_count` devices each stand in
for hosts in the tests. All of this must happen before anything touches a device, so entry
points call `initialize` first (`train.py` does).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax

from dlm.errors import DlmError


@dataclasses.dataclass(frozen=True)
class Topology:
  process_index: int
  process_count: int
  how: str  # 'single' | 'flags' | 'environment' | 'cluster:<name>'


def gloo_available() -> bool:
  """Whether this jaxlib has gloo CPU collectives."""
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, "make_gloo_tcp_collectives")


def _cpu_collectives() -> None:
  """gloo for cross-process collectives on CPU (JAX's default now; set explicitly so an
  older default of none fails loudly here rather than hanging in the first all-reduce)."""
  if os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    return  # the user chose (e.g. mpi)
  if not gloo_available():
    raise DlmError("this jaxlib has no gloo CPU collectives (jax._src.lib._jax."
                   "make_gloo_tcp_collectives): multi-process CPU runs need a jaxlib built with "
                   "gloo, or set JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


# JAX cluster environments whose presence alone starts a multi-process run: Cloud TPU (GCE,
# GKE), SLURM and Open MPI. Kubernetes and mpi4py need JAX_COORDINATOR_ADDRESS or the flags
# (a pod or an MPI install is no sign of a multi-process job).
AUTO_CLUSTERS = ("gcetpu", "gketpu", "slurm", "ompi")


def detected_cluster() -> tuple[str, int] | None:
  """(name, process count) of an `AUTO_CLUSTERS` environment that JAX's auto-detection
  recognises, else None. Uses JAX's own registry (`ClusterEnv`: private, but the code that
  `jax.distributed.initialize()` runs)."""
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    envs = list(clusters.ClusterEnv._cluster_types)  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None
  for env in envs:
    if getattr(env, "name", "") not in AUTO_CLUSTERS:
      continue
    try:
      present = env.is_env_present()
    except Exception:  # pylint: disable=broad-except  # a probe must never stop a local run
      present = False
    if present:
      try:
        count = int(env.get_process_count())
      except Exception:  # pylint: disable=broad-except
        count = 2  # unknown: let jax.distributed.initialize decide
      return env.name, count
  return None


def _int_env(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError as e:
    raise DlmError(f"environment variable {name}={value!r} must be an integer") from e


def initialize(coordinator_address: str = "", num_processes: int = 0,
               process_id: int = -1) -> Topology:
  """Joins the run's processes (see the module docstring); returns where this one stands.

  Idempotent: a second call (or a call after `jax.distributed.initialize`) changes nothing.
  """
  if jax.distributed.is_initialized():
    return Topology(jax.process_index(), jax.process_count(), "already")
  given = {"--coordinator_address": bool(coordinator_address),
           "--num_processes": num_processes > 0, "--process_id": process_id >= 0}
  if any(given.values()):
    missing = [name for name, ok in given.items() if not ok]
    if missing:
      raise DlmError(f"multi-process flags go together: {', '.join(missing)} missing "
                     "(give --coordinator_address, --num_processes and --process_id, or none)")
    if process_id >= num_processes:
      raise DlmError(f"--process_id={process_id} must be below --num_processes={num_processes}")
    how, kwargs = "flags", dict(coordinator_address=coordinator_address,
                                num_processes=num_processes, process_id=process_id)
  elif os.environ.get("JAX_COORDINATOR_ADDRESS"):
    how = "environment"
    kwargs = dict(num_processes=_int_env("JAX_NUM_PROCESSES"),
                  process_id=_int_env("JAX_PROCESS_ID"))
  elif (cluster := detected_cluster()) is not None and cluster[1] > 1:
    how, kwargs = f"cluster:{cluster[0]}", {}
  else:
    return Topology(0, 1, "single")
  _cpu_collectives()
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    if "before" in str(e) or "already" in str(e):
      raise DlmError(f"jax.distributed.initialize must run before anything uses a device: {e}")
    raise
  except ValueError as e:  # the environment left a parameter undetermined
    raise DlmError(f"cannot start the multi-process run ({how}): {e}") from e
  topology = Topology(jax.process_index(), jax.process_count(), how)
  if topology.process_index == 0:
    print(f"dlm: {topology.process_count} processes ({how}), {jax.device_count()} devices, "
          f"{jax.local_device_count()} per process", file=sys.stderr)
  return topology


def is_main() -> bool:
  """Whether this process writes logs, metrics and printed results (process 0)."""
  return jax.process_index() == 0


def say(message: str) -> None:
  """A progress or notice line on stderr, from process 0 only."""
  if is_main():
    print(message, file=sys.stderr)
