"""English prose out of Python source: docstrings (with `ast`) and comments (with `tokenize`).

This is what the embedded `python_stdlib/docs` corpus is made of. Docstrings come with the
qualified name and, for functions, the signature they document, so later tasks (instruction
pairs: signature + summary -> rest of the docstring) can reuse the same records.

`summaries` makes the `python_stdlib/summarize` pairs: a function's code with its docstring cut
out of the original text (comments and formatting kept), and the docstring's first sentence.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
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


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One function or method with a multi-sentence docstring, as a (prompt -> response) pair."""

  qualname: str  # "json.JSONEncoder.default"
  lineno: int  # line of the `def` (1-based)
  prompt: str  # "json.dumps(obj, *, skipkeys=False, ...)\n" + the docstring's first sentence
  response: str  # the rest of the docstring (cleaned, its layout kept)


@dataclasses.dataclass(frozen=True)
class Summary:
  """One function or method with a docstring, as a (source -> target) pair."""

  qualname: str  # "json.JSONEncoder.default"
  lineno: int  # line of the `def` (1-based)
  source: str  # the function's code, decorators included, docstring cut out, unindented
  target: str  # the first sentence of its docstring (see `first_sentence`)


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


def _definitions(node: ast.AST, prefix: str):
  """Yields `(qualname, node)` for every class and function under `node`, outer ones first."""
  for child in ast.iter_child_nodes(node):
    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      qualname = f"{prefix}.{child.name}" if prefix else child.name
      yield qualname, child
      yield from _definitions(child, qualname)
    elif not isinstance(child, (ast.Lambda, ast.expr)):
      yield from _definitions(child, prefix)  # functions defined inside if/try/with blocks


def _documented_functions(tree: ast.AST, module: str):
  """Yields `(qualname, node, docstring)` for every function and method with a docstring."""
  for qualname, node in _definitions(tree, module):
    if isinstance(node, ast.ClassDef):
      continue
    docstring = ast.get_docstring(node, clean=True)
    if docstring:
      yield qualname, node, docstring


def docstrings(source: str, module: str) -> list[Docstring]:
  """All module, class and function docstrings of `source`, in source order."""
  tree = ast.parse(source)
  found: list[Docstring] = []
  for qualname, node in _definitions(tree, module):
    text = ast.get_docstring(node, clean=True)
    if text:
      if isinstance(node, ast.ClassDef):
        kind, signature = "class", None
      else:
        kind, signature = "function", f"{node.name}({ast.unparse(node.args)})"
      found.append(Docstring(qualname, kind, node.body[0].lineno, signature, text))
  text = ast.get_docstring(tree, clean=True)
  if text:
    found.append(Docstring(module, "module", tree.body[0].lineno, None, text))
  found.sort(key=lambda d: d.lineno)
  return found


# A sentence ends at a period followed by whitespace or the end, except after e.g./i.e./cf./vs.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bcf)(?<!\bvs)\.(?=\s|$)")


# A line that ends a docstring's first paragraph early: a doctest, or a reST heading underline.
_PARAGRAPH_STOP = re.compile(r"^\s*(>>>|([-=~^*#+])\2{2,}\s*$)")


def first_sentence(docstring: str) -> str:
  """The first sentence of a docstring's first paragraph, whitespace collapsed to single spaces.

  The docstring is cleaned with `inspect.cleandoc`; the first paragraph ends at a blank line, a
  `>>>` doctest line or a reST heading underline; the sentence runs up to the first period
  followed by whitespace (`. `, `.\\n`), or to the end of the paragraph ('' for a docstring
  that opens with a doctest).
  """
  lines = []
  for line in inspect.cleandoc(docstring).strip().split("\n"):
    if not line.strip() or _PARAGRAPH_STOP.match(line):
      break
    lines.append(line)
  paragraph = " ".join(" ".join(lines).split())
  end = _SENTENCE_END.search(paragraph)
  return paragraph[:end.end()] if end else paragraph


def _utf8_cut(line: str, offset: int) -> tuple[str, str]:
  """`line` split at a UTF-8 byte offset (what `ast` column offsets count)."""
  data = line.encode("utf-8")
  return data[:offset].decode("utf-8"), data[offset:].decode("utf-8")


def without_docstring(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
  """The function's text (decorators included) with its docstring statement cut out.

  `lines` are the module's source lines (no line ends). The docstring is removed from the
  original text, so comments and formatting survive; blank lines right after it go too, and a
  body that held nothing else becomes `pass`. Every line loses the `def` line's indentation
  (string literal lines that lack it are kept as they are). Raises `SyntaxError` if the result
  does not parse.
  """
  doc = node.body[0]
  start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
  before, _ = _utf8_cut(lines[doc.lineno - 1], doc.col_offset)
  _, after = _utf8_cut(lines[doc.end_lineno - 1], doc.end_col_offset)
  after = after.strip()
  if after.startswith(";"):  # `"""doc"""; x = 1`: the statements after it stay
    after = after[1:].strip()
  elif after.startswith("#"):
    after = ""
  if not after and len(node.body) == 1:
    after = "pass"
  head = lines[start - 1:doc.lineno - 1]
  tail = lines[doc.end_lineno:node.end_lineno]
  if before.strip() or after:
    head.append(before + after)
  else:
    while tail and not tail[0].strip():  # the blank line that follows a docstring
      tail = tail[1:]
  indent = lines[start - 1][:len(lines[start - 1]) - len(lines[start - 1].lstrip())]
  text = "\n".join(_unindent(line, indent) for line in head + tail).rstrip() + "\n"
  ast.parse(text)
  return text


def _unindent(line: str, indent: str) -> str:
  """`line` less the `def`'s indentation (lines of a string literal that lack it stay as is)."""
  if not line.strip():
    return ""
  return line[len(indent):] if line.startswith(indent) else line


def summaries(source: str, module: str, *, max_source_chars: int = 4000,
              min_target_words: int = 3) -> list[Summary]:
  """(code without docstring -> first sentence) for every function and method with a docstring.

  Functions whose code (docstring cut out) is over `max_source_chars`, whose first sentence has
  fewer than `min_target_words` words, or whose cut code would not parse are left out. In
  source order.
  """
  tree = ast.parse(source)
  lines = source.split("\n")
  found = []
  for qualname, node, docstring in _documented_functions(tree, module):
    target = first_sentence(docstring)
    if len(target.split()) < min_target_words:
      continue
    try:
      code = without_docstring(lines, node)
    except (SyntaxError, UnicodeDecodeError):
      continue
    if len(code) <= max_source_chars:
      found.append(Summary(qualname, node.lineno, code, target))
  found.sort(key=lambda s: s.lineno)
  return found


def rest_after_first_sentence(docstring: str) -> str:
  """The docstring (cleaned, layout kept) after the words of `first_sentence`."""
  text = inspect.cleandoc(docstring).strip()
  words = len(first_sentence(text).split())
  if not words:
    return text
  ends = [m.end() for m in re.finditer(r"\S+", text)]
  return text[ends[words - 1]:].strip() if words <= len(ends) else ""


def instructions(source: str, module: str, *, min_prompt_words: int = 3,
                 min_response_words: int = 3, max_response_chars: int = 1500) -> list[Instruction]:
  """(signature + first sentence -> rest of the docstring) for every function and method.

  The prompt is the qualified signature (`json.dumps(obj, *, skipkeys=False)`) on one line and
  the docstring's first sentence on the next; the response is everything after that sentence.
  Functions whose first sentence has fewer than `min_prompt_words` words, whose rest has fewer
  than `min_response_words` words or more than `max_response_chars` characters are left out.
  In source order.
  """
  found = []
  for qualname, node, docstring in _documented_functions(ast.parse(source), module):
    summary = first_sentence(docstring)
    response = rest_after_first_sentence(docstring)
    if (len(summary.split()) < min_prompt_words or len(response.split()) < min_response_words
        or len(response) > max_response_chars):
      continue
    prompt = f"{qualname}({ast.unparse(node.args)})\n{summary}"
    found.append(Instruction(qualname, node.lineno, prompt, response))
  found.sort(key=lambda s: s.lineno)
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
