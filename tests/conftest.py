"""Shared fixtures. Eight host CPU devices so sharding tests see a real mesh."""

import os

# Eight host CPU devices; LLVM's optimisation level 0: the tests' models are tiny, so building
# their programs costs far more than running them (the suite takes about 40% less time; the
# programs compute the same functions).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the run: pytest-xdist's workers and the entry points
# the tests start (train.py, sample.py, ... inherit the environment) compile the same tiny
# programs again and again. The controller makes it (workers inherit its environment) and
# removes it at the end (`pytest_unconfigure`).
_OWN_CACHE = "PYTEST_XDIST_WORKER" not in os.environ and "DLM_TEST_XLA_CACHE" not in os.environ
if _OWN_CACHE:
  import tempfile  # noqa: E402

  os.environ["DLM_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="dlm-tests-xla-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["DLM_TEST_XLA_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import pathlib  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, "workerinput"):  # the controller: the run is over
    shutil.rmtree(os.environ["DLM_TEST_XLA_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, worker_id) -> str:
  """One prepared-data directory for the whole run (stdlib corpus, BPE tokenizers), shared by
  pytest-xdist's workers: the library's file locks let one prepare while the others wait."""
  if worker_id == "master":  # not under xdist
    return str(tmp_path_factory.mktemp("tfds"))
  shared = tmp_path_factory.getbasetemp().parent / "tfds"
  shared.mkdir(exist_ok=True)
  return str(shared)


@pytest.fixture(scope="session")
def quickstart(data_dir):
  """The quickstart config pointed at the session's data directory."""
  from dlm import config as config_lib

  return config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                              **{"data.data_dir": data_dir})


@pytest.fixture(scope="session")
def tokenizer(quickstart):
  from dlm.data import inputs

  return inputs.load_tokenizer(quickstart.data)
