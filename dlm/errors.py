"""User-facing errors: one line that names the problem, printed without a traceback."""

from __future__ import annotations

import contextlib
import sys


class DlmError(Exception):
  """A problem with the user's input (config, data, checkpoint, prompt), not a bug."""


@contextlib.contextmanager
def exit_on_user_error():
  """Turns a `DlmError` raised inside into `error: <message>` on stderr and exit status 2."""
  try:
    yield
  except DlmError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
