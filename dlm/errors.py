"""User-facing errors: one line that names the problem, printed without a traceback."""

from __future__ import annotations

import contextlib
import sys


def one_line(e: BaseException) -> str:
  """`ExceptionType: the first line of its message`, for errors reported in one line."""
  text = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
  return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


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
