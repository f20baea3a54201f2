"""The layers of `dlm/` point one way: every import (function-local ones included) goes to a
module of the same layer or a lower one, and no modules import each other in a cycle.

The layers, lowest first (docs/ARCHITECTURE.md draws the same):

  0 errors
  1 config, registry, sharding, distributed, textmetrics       settings, the registry, the mesh
  2 data.*                                                       documents, tokenizers, batches
  3 processes.*, models.{layers, family, transformer, encoders}  noise processes, the backbone
  4 models.<family>                                              each family's model and record
  5 models (the package: registers the built-in families)
  6 samplers.*, likelihood                                       on the model contract
  7 train.*                                                      the loop, checkpoints, restore
  8 evaluate, features, api, cli, joint_data, neodiff_schedule,  a trained model's users, flags
    convert.*
  9 data.__main__, convert.__main__, lm_eval, dlm (the package)  entry points
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dlm"

LAYERS = [
    ("dlm.errors",),
    ("dlm.config", "dlm.registry", "dlm.sharding", "dlm.distributed", "dlm.textmetrics"),
    ("dlm.data.",),
    ("dlm.processes.", "dlm.models.layers", "dlm.models.family", "dlm.models.transformer",
     "dlm.models.encoders"),
    ("dlm.models.",),
    ("dlm.models",),
    ("dlm.samplers", "dlm.samplers.", "dlm.likelihood"),
    ("dlm.train.",),
    ("dlm.evaluate", "dlm.features", "dlm.api", "dlm.cli", "dlm.joint_data", "dlm.neodiff_schedule",
     "dlm.convert", "dlm.convert."),
    ("dlm.data.__main__", "dlm.convert.__main__", "dlm.lm_eval", "dlm"),
]


def layer_of(module: str) -> int:
  """The most specific rule wins: an exact name, else the longest matching prefix."""
  best, best_len = None, -1
  for i, rules in enumerate(LAYERS):
    for rule in rules:
      exact = module == rule
      prefix = rule.endswith(".") and module.startswith(rule)
      length = len(rule) + (1000 if exact else 0)
      if (exact or prefix) and length > best_len:
        best, best_len = i, length
  if best is None:
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md")
  return best


def _modules(package: pathlib.Path) -> dict[str, pathlib.Path]:
  out = {}
  for path in package.rglob("*.py"):
    name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
    out[name.removesuffix(".__init__")] = path
  return out


def imports(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
  """module -> the dlm modules it imports anywhere in its file (`from a import b` counts as
  a.b where that is a module)."""
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                   else node.module for a in node.names]
      else:
        continue
      for target in targets:
        while target and target not in modules:
          target = target.rpartition(".")[0]
        if target and target != name:
          found.add(target)
    graph[name] = found
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def violations(graph: dict[str, set[str]]) -> list[str]:
  return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_imports_point_down_and_form_no_cycle():
  graph = imports(_modules(PACKAGE))
  assert len(graph) > 60
  assert violations(graph) == []
  assert cycles(graph) == []


def test_the_check_catches_an_upward_import_and_a_cycle(tmp_path):
  """The same check on a copy of the package with one bad import added fails."""
  modules = _modules(PACKAGE)
  graph = imports(modules)
  graph["dlm.models.masked"] = graph["dlm.models.masked"] | {"dlm.train.loop"}
  assert violations(graph) == [
      "dlm.models.masked (layer 4) imports dlm.train.loop (layer 7)"]
  assert any("dlm.models.masked" in c and "dlm.train.loop" in c for c in cycles(graph))
  graph = imports(modules)
  graph["dlm.models.layers"] = graph["dlm.models.layers"] | {"dlm.models.family"}
  graph["dlm.models.family"] = graph["dlm.models.family"] | {"dlm.models.layers"}
  assert violations(graph) == [] and ["dlm.models.family", "dlm.models.layers"] in cycles(graph)


@pytest.mark.parametrize("module, layer", [("dlm.errors", 0), ("dlm.data.pipeline", 2),
                                           ("dlm.models.transformer", 3),
                                           ("dlm.models.ccdd", 4), ("dlm.models", 5),
                                           ("dlm.samplers.core", 6), ("dlm.train.loop", 7),
                                           ("dlm", 9), ("dlm.data.__main__", 9)])
def test_layers_of_known_modules(module, layer):
  assert layer_of(module) == layer
