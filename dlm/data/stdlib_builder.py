"""The embedded default corpus: a TFDS builder over the running interpreter's standard library.

Four configs, all split into train/validation by a hash of each file's path (no file in both):

* `python_stdlib/docs`: English prose, one document per source file holding its module, class
  and function docstrings and comments in line order (see `pyextract`), plus one document per
  `pydoc_data` help topic (split by the topic's name, under the pseudo-path
  `pydoc_data/topics/<name>`).
* `python_stdlib/code`: the `.py` sources themselves, one document per file.
* `python_stdlib/summarize`: (source -> target) pairs, one per function or method with a
  docstring: `source` is its code with the docstring cut out, `target` the docstring's first
  sentence, `path` its file (see `pyextract.summaries`: targets under 3 words and sources over
  4000 characters are left out).
* `python_stdlib/instruct`: (prompt -> response) instruction pairs, one per function or method
  whose docstring goes on after its first sentence: `prompt` is the qualified signature and
  the first sentence, `response` the rest of the docstring, `path` its file (see
  `pyextract.instructions`: responses under 3 words or over 1500 characters are left out).

Files under `site-packages` are not part of the standard library; files that do not parse
(the test suite keeps a few on purpose) are left out of every config. Distributions that strip
the `test` package give a smaller corpus.

Registered with TFDS on import, so `tfds.data_source("python_stdlib/docs")` and the config line
`data.dataset = "tfds:python_stdlib/docs"` both find it.
"""

from __future__ import annotations

import ast
import hashlib
import pathlib
import sys
import sysconfig
import warnings

import tensorflow_datasets as tfds

from dlm.data import pyextract

VALIDATION_FRACTION = 0.05
MAX_SOURCE_CHARS = 4000  # summarize: longer functions are left out
MIN_TARGET_WORDS = 3  # summarize: shorter first sentences are left out
MAX_RESPONSE_CHARS = 1500  # instruct: longer responses are left out
_SKIP_DIRS = frozenset({"site-packages", "__pycache__"})


def stdlib_root() -> pathlib.Path:
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def split_of(key: str, validation_fraction: float = VALIDATION_FRACTION) -> str:
  """Deterministic split of a document key (a relative path): 'train' or 'validation'."""
  digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
  return "validation" if digest / 2**64 < validation_fraction else "train"


def stdlib_files(root: pathlib.Path | None = None) -> list[str]:
  """Relative paths (posix) of the standard library's `.py` files, sorted."""
  root = root or stdlib_root()
  files = []
  for path in root.rglob("*.py"):
    rel = path.relative_to(root)
    if not _SKIP_DIRS.intersection(rel.parts[:-1]):
      files.append(rel.as_posix())
  return sorted(files)


def _each_file(root: pathlib.Path, extract):
  """Yields `(rel, extract(source, rel))` for every stdlib file whose source decodes and
  parses; old sources' syntax and escape warnings are silenced."""
  for rel in stdlib_files(root):
    try:
      source = pyextract.decode_source((root / rel).read_bytes())
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # invalid escapes in old sources
        result = extract(source, rel)
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue
    yield rel, result


def _code(source: str, rel: str) -> str:
  del rel
  ast.parse(source)  # same file set as 'docs': sources that parse
  return source


def documents(config: str, root: pathlib.Path | None = None):
  """Yields `(key, text)` for every document of a config ('docs' or 'code')."""
  root = root or stdlib_root()
  extract = _code if config == "code" else (
      lambda source, rel: pyextract.prose(source, pyextract.module_name(rel)))
  for rel, text in _each_file(root, extract):
    if text.strip():
      yield rel, text
  if config == "docs":
    import pydoc_data.topics  # pylint: disable=g-import-not-at-top

    for name, text in sorted(pydoc_data.topics.topics.items()):
      yield f"pydoc_data/topics/{name}", text


def _records(root, extract, fields):
  """Yields `(path:line, record)` for every item `extract` finds per file: the item's `fields`
  plus the file's `path`; files in sorted order, items in source order."""
  for rel, found in _each_file(root or stdlib_root(), extract):
    for item in found:
      yield f"{rel}:{item.lineno}", {**{f: getattr(item, f) for f in fields}, "path": rel}


def pairs(root: pathlib.Path | None = None):
  """Yields `(key, record)` for every summarize pair: `{"source", "target", "path"}`.

  Keys are `path:line` of the `def`; files in sorted order, functions in source order.
  """
  return _records(root, lambda source, rel: pyextract.summaries(
      source, pyextract.module_name(rel), max_source_chars=MAX_SOURCE_CHARS,
      min_target_words=MIN_TARGET_WORDS), ("source", "target"))


def instruction_pairs(root: pathlib.Path | None = None):
  """Yields `(key, record)` for every instruct pair: `{"prompt", "response", "path"}`."""
  return _records(root, lambda source, rel: pyextract.instructions(
      source, pyextract.module_name(rel), min_prompt_words=MIN_TARGET_WORDS,
      max_response_chars=MAX_RESPONSE_CHARS), ("prompt", "response"))


class PythonStdlibConfig(tfds.core.BuilderConfig):
  pass


class PythonStdlib(tfds.core.GeneratorBasedBuilder):
  """Docstrings, comments and sources of the running interpreter's standard library."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Docs and code configs; 5% validation split by path hash."}
  BUILDER_CONFIGS = [
      PythonStdlibConfig(name="docs", description="Docstrings, comments and pydoc topics."),
      PythonStdlibConfig(name="code", description="The .py sources."),
      PythonStdlibConfig(
          name="summarize",
          description="Function code without its docstring -> the docstring's first sentence.",
      ),
      PythonStdlibConfig(
          name="instruct",
          description="Signature and first docstring sentence -> the rest of the docstring.",
      ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            f"Python {sys.version.split()[0]} standard library ({self.builder_config.name})."
        ),
        features=tfds.features.FeaturesDict(
            {name: tfds.features.Text() for name in self._feature_names()}
        ),
        homepage="https://docs.python.org/3/library/",
    )

  def _feature_names(self) -> tuple[str, ...]:
    if self.builder_config.name == "summarize":
      return ("source", "target", "path")
    if self.builder_config.name == "instruct":
      return ("prompt", "response", "path")
    return ("text", "path")

  def _split_generators(self, dl_manager):
    del dl_manager
    if self.builder_config.name == "summarize":
      examples = list(pairs())  # extracted once for both splits
    elif self.builder_config.name == "instruct":
      examples = list(instruction_pairs())
    else:
      examples = [(key, {"text": text, "path": key})
                  for key, text in documents(self.builder_config.name)]
    return {split: self._generate_examples(examples, split)
            for split in ("train", "validation")}

  def _generate_examples(self, examples, split: str):
    for key, record in examples:
      if split_of(record["path"]) == split:
        yield key, record
