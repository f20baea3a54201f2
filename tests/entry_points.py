"""What the entry-point tests share: a user error is exit status 2 and one `error:` line; the
XLA flags of an entry point started by a test (one host device; programs built at LLVM's
optimisation level 0, as conftest.py does for the tests' own)."""

ONE_DEVICE_XLA_FLAGS = "--xla_backend_optimization_level=0"


def assert_one_error(proc, message):
  """Exit 2, exactly one `error:` line (the last), containing `message`, and no traceback."""
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
  assert message in errors[0], errors[0]
  assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr[-3000:]
