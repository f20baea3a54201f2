"""The run directory: a local path, created and checked writable before any work starts, and
used by one training run at a time (a lock file that the kernel releases when the process
ends, even on SIGKILL)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time

import jax

from dlm.errors import DlmError

LOCK_FILE = "train.lock"


def check_local(workdir: str) -> None:
  """A workdir is a local (or mounted) path, not a URL."""
  if "://" in workdir:
    raise DlmError(f"workdir {workdir!r} is not a local path: dlm writes workdirs on local or "
                   "mounted file systems (mount a bucket with gcsfuse or similar)")


def prepare(workdir: str) -> None:
  """Creates `workdir` if needed and checks that files can be written there."""
  check_local(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise DlmError(f"cannot create workdir {workdir!r}: {e.strerror}") from None
  probe = os.path.join(workdir, f".dlm-write-test-{os.getpid()}")
  try:
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise DlmError(f"workdir {workdir!r} is not writable ({e.strerror})") from None


@contextlib.contextmanager
def lock(workdir: str):
  """Holds `WORKDIR/train.lock` for the duration: a second training run on the same workdir
  is refused (one process per run takes it: process 0 of a multi-host run)."""
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  f = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise DlmError(f"workdir {workdir!r} is in use by another training run ({holder}); wait "
                   "for it to end or use another workdir") from None
  try:
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    yield
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()
