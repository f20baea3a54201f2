"""Shared fixtures. Eight host CPU devices so sharding tests see a real mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


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

  return config_lib.from_file(str(ROOT / "configs/quickstart.py"), **{"data.data_dir": data_dir})


@pytest.fixture(scope="session")
def tokenizer(quickstart):
  from dlm.data import inputs

  return inputs.load_tokenizer(quickstart.data)
