"""The package's layout: no import circle, the entry points apart (main.py
and tools/), the library never importing a tool, and every entry point
importable with the others into one process."""

import ast
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = os.path.join(REPO, 'adanet_jax')


def _module_files() -> dict[str, str]:
  """{'adanet_jax.x.y': path} for every module of the package."""
  modules = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        modules['.'.join(parts)] = path
  return modules


def _imports(path: str, modules) -> set[str]:
  """The package modules `path` imports, at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
    else:
      continue
    found.update(n for n in names if n in modules and n.startswith('adanet_jax.'))
  return found


def _is_entry_point(path: str) -> bool:
  """Whether the module has a top-level `if __name__ == '__main__':`."""
  return any(isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
             isinstance(node.test.left, ast.Name) and node.test.left.id == '__name__'
             for node in ast.parse(open(path).read()).body)


def _entry_points() -> set[str]:
  return {m for m, p in _module_files().items() if _is_entry_point(p)}


def _graph():
  modules = _module_files()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _cycle(graph):
  """One import circle as a list of modules, or None."""
  state = {}

  def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = 'done'
    return None

  for start in sorted(graph):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return None


def test_the_walker_finds_a_circle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_no_import_circle():
  graph = _graph()
  assert 'adanet_jax.config_lib' in graph['adanet_jax.main']  # the walker sees imports
  assert _cycle(graph) is None, ' -> '.join(_cycle(graph))


def test_entry_points_are_main_and_the_tools():
  entry_points = _entry_points()
  assert 'adanet_jax.main' in entry_points
  assert {m for m in entry_points if m != 'adanet_jax.main'} == {
      m for m in entry_points if m.startswith('adanet_jax.tools.')}
  assert {'adanet_jax.tools.summary', 'adanet_jax.tools.sweep',
          'adanet_jax.tools.launch'} <= entry_points


def test_library_never_imports_a_tool():
  for module, imported in _graph().items():
    if not module.startswith('adanet_jax.tools') and module != 'adanet_jax.main':
      assert not {m for m in imported if m.startswith('adanet_jax.tools')}, module


def test_every_entry_point_imports_into_one_process_defining_no_flag():
  entry_points = sorted(_entry_points())
  code = (''.join(f'import {m}\n' for m in entry_points) +
          'from absl import flags\n'
          'print(sorted(m for m in flags.FLAGS.flags_by_module_dict() if "adanet_jax" in m))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == '[]'
