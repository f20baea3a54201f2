"""English prose out of Python source: docstrings (with `ast`) and comments (with `tokenize`).

This is what the embedded `python_stdlib/docs` corpus is made of. Docstrings come with the
qualified name and, for functions, the signature they document, so later tasks (instruction
pairs: signature + summary -> rest of the docstring) can reuse the same records.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize


@dataclasses.dataclass(frozen=True)
class Docstring:
  """One docstring, as `ast.get_docstring(clean=True)` returns it."""

  qualname: str  # "json.dumps", "json.JSONEncoder.default"; the module name for a module docstring
  kind: str  # "module" | "class" | "function"
  lineno: int  # line of the docstring literal (1-based)
  signature: str | None  # "dumps(obj, *, skipkeys=False, ...)" for functions, else None
  text: str


@dataclasses.dataclass(frozen=True)
class Comment:
  """A block of full-line or trailing comments on consecutive lines, `#` markers removed."""

  lineno: int
  text: str


# Comments that are tool directives, not prose.
_DIRECTIVE = re.compile(r"^(noqa|type:|pragma|fmt:|pylint:|isort:|mypy:|-\*-|vim?:|coding[:=])")


def module_name(relative_path: str) -> str:
  """`json/__init__.py` -> `json`, `os.py` -> `os`, `email/mime/text.py` -> `email.mime.text`."""
  parts = relative_path.replace("\\", "/").removesuffix(".py").split("/")
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def decode_source(data: bytes) -> str:
  """Decodes Python source bytes honouring a PEP 263 coding cookie; newlines become '\\n'."""
  encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
  text = data.decode(encoding)
  return text.replace("\r\n", "\n").replace("\r", "\n")


def docstrings(source: str, module: str) -> list[Docstring]:
  """All module, class and function docstrings of `source`, in source order."""
  tree = ast.parse(source)
  found: list[Docstring] = []

  def visit(node: ast.AST, prefix: str) -> None:
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        qualname = f"{prefix}.{child.name}" if prefix else child.name
        text = ast.get_docstring(child, clean=True)
        if text:
          if isinstance(child, ast.ClassDef):
            kind, signature = "class", None
          else:
            kind, signature = "function", f"{child.name}({ast.unparse(child.args)})"
          found.append(Docstring(qualname, kind, child.body[0].lineno, signature, text))
        visit(child, qualname)
      elif not isinstance(child, (ast.Lambda, ast.expr)):
        visit(child, prefix)  # functions defined inside if/try/with blocks

  text = ast.get_docstring(tree, clean=True)
  if text:
    found.append(Docstring(module, "module", tree.body[0].lineno, None, text))
  visit(tree, module)
  found.sort(key=lambda d: d.lineno)
  return found


def comments(source: str) -> list[Comment]:
  """Comment blocks of `source` (consecutive comment lines merged), without tool directives."""
  blocks: list[Comment] = []
  lines: list[str] = []
  start = last = -1
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type != tokenize.COMMENT:
      continue
    row = tok.start[0]
    text = tok.string.lstrip("#")
    text = text[1:] if text.startswith(" ") else text
    text = text.rstrip()
    if row == 1 and tok.string.startswith("#!"):
      continue
    if not re.search(r"[A-Za-z]", text) or _DIRECTIVE.match(text.strip()):
      continue
    if lines and row == last + 1:
      lines.append(text)
    else:
      if lines:
        blocks.append(Comment(start, "\n".join(lines)))
      lines, start = [text], row
    last = row
  if lines:
    blocks.append(Comment(start, "\n".join(lines)))
  return blocks


def prose(source: str, module: str) -> str:
  """The docstrings and comments of one source file, in line order, separated by blank lines."""
  items = [(d.lineno, d.text) for d in docstrings(source, module)]
  items += [(c.lineno, c.text) for c in comments(source)]
  items.sort(key=lambda item: item[0])
  return "\n\n".join(text for _, text in items)
