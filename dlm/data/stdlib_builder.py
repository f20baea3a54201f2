"""The embedded default corpus: a TFDS builder over the running interpreter's standard library.

Two configs, both split into train/validation by a hash of each file's path (no file in both):

* `python_stdlib/docs`: English prose, one document per source file holding its module, class
  and function docstrings and comments in line order (see `pyextract`), plus one document per
  `pydoc_data` help topic (split by the topic's name, under the pseudo-path
  `pydoc_data/topics/<name>`).
* `python_stdlib/code`: the `.py` sources themselves, one document per file.

Files under `site-packages` are not part of the standard library; files that do not parse
(the test suite keeps a few on purpose) are left out of both configs. Distributions that strip
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


def documents(config: str, root: pathlib.Path | None = None):
  """Yields `(key, text)` for every document of a config ('docs' or 'code')."""
  root = root or stdlib_root()
  for rel in stdlib_files(root):
    try:
      source = pyextract.decode_source((root / rel).read_bytes())
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # invalid escapes in old sources
        if config == "code":
          ast.parse(source)  # same file set as 'docs': sources that parse
          text = source
        else:
          text = pyextract.prose(source, pyextract.module_name(rel))
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue
    if text.strip():
      yield rel, text
  if config == "docs":
    import pydoc_data.topics  # pylint: disable=g-import-not-at-top

    for name, text in sorted(pydoc_data.topics.topics.items()):
      yield f"pydoc_data/topics/{name}", text


class PythonStdlibConfig(tfds.core.BuilderConfig):
  pass


class PythonStdlib(tfds.core.GeneratorBasedBuilder):
  """Docstrings, comments and sources of the running interpreter's standard library."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Docs and code configs; 5% validation split by path hash."}
  BUILDER_CONFIGS = [
      PythonStdlibConfig(name="docs", description="Docstrings, comments and pydoc topics."),
      PythonStdlibConfig(name="code", description="The .py sources."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            f"Python {sys.version.split()[0]} standard library ({self.builder_config.name})."
        ),
        features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "path": tfds.features.Text()}
        ),
        homepage="https://docs.python.org/3/library/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    docs = list(documents(self.builder_config.name))  # extracted once for both splits
    return {split: self._generate_examples(docs, split) for split in ("train", "validation")}

  def _generate_examples(self, docs, split: str):
    for key, text in docs:
      if split_of(key) == split:
        yield key, {"text": text, "path": key}
