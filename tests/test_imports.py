"""The package's layout: no import circle, the entry points apart (main.py
and tools/), the library never importing a tool, and every entry point
importable with the others into one process."""

import ast
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = os.path.join(REPO, 'adanet_jax')
# the one module that imports torch (an optional extra)
TORCH_MODEL = 'adanet_jax.torch_model'


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
      names = [node.module] + [
          f'{node.module}.{alias.name}' for alias in node.names
      ]
    else:
      continue
    found.update(
        n for n in names if n in modules and n.startswith('adanet_jax.')
    )
  return found


def _is_entry_point(path: str) -> bool:
  """Whether the module has a top-level `if __name__ == '__main__':`."""
  return any(
      isinstance(node, ast.If)
      and isinstance(node.test, ast.Compare)
      and isinstance(node.test.left, ast.Name)
      and node.test.left.id == '__name__'
      for node in ast.parse(open(path).read()).body
  )


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
        return path[path.index(nxt) :] + [nxt]
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
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == [
      'a',
      'b',
      'c',
      'a',
  ]
  assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_no_import_circle():
  graph = _graph()
  # the walker sees imports
  assert 'adanet_jax.config_lib' in graph['adanet_jax.main']
  assert _cycle(graph) is None, ' -> '.join(_cycle(graph))


def test_entry_points_are_main_and_the_tools():
  entry_points = _entry_points()
  assert 'adanet_jax.main' in entry_points
  assert {m for m in entry_points if m != 'adanet_jax.main'} == {
      m for m in entry_points if m.startswith('adanet_jax.tools.')
  }
  assert {
      'adanet_jax.tools.summary',
      'adanet_jax.tools.sweep',
      'adanet_jax.tools.launch',
  } <= entry_points


def test_library_never_imports_a_tool():
  for module, imported in _graph().items():
    if (
        not module.startswith('adanet_jax.tools')
        and module != 'adanet_jax.main'
    ):
      assert not {
          m for m in imported if m.startswith('adanet_jax.tools')
      }, module


def test_every_entry_point_imports_into_one_process_defining_no_flag():
  entry_points = sorted(_entry_points())
  code = (
      ''.join(f'import {m}\n' for m in entry_points)
      + 'from absl import flags\n'
      'print(sorted(m for m in flags.FLAGS.flags_by_module_dict() if "adanet_jax" in m))\n'
  )
  out = subprocess.run(
      [sys.executable, '-c', code],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == '[]'


# Floors of the package, lowest first: a module imports only from its own
# floor or below. The model (the paper) sits on the base alone.
FLOORS = {
    'adanet_jax.errors': 0,
    'adanet_jax.config_lib': 0,
    'adanet_jax.model': 1,
    # the PyTorch model: on the model, and the model never imports it
    'adanet_jax.torch_model': 1,
    'adanet_jax.data': 2,
    'adanet_jax.train': 3,
    'adanet_jax.infer': 4,
    'adanet_jax.runtime': 5,
    'adanet_jax.main': 6,
    'adanet_jax.tools': 6,
    'adanet_jax': 6,
}


def test_nothing_in_the_package_imports_the_torch_model():
  # torch is an optional extra; the library must import without it
  graph = _graph()
  assert 'adanet_jax.model.torch_io' in graph[TORCH_MODEL]
  importers = [m for m, imported in graph.items() if TORCH_MODEL in imported]
  assert not importers, importers


def _floor(module: str) -> int:
  """The floor of `module`: that of its longest listed prefix."""
  prefixes = [p for p in FLOORS if module == p or module.startswith(p + '.')]
  return FLOORS[max(prefixes, key=len)]


def test_every_module_has_a_floor_and_the_walker_sees_subpackages():
  graph = _graph()
  assert 'adanet_jax.model.gate' in graph['adanet_jax.model.resnet']
  assert (
      _floor('adanet_jax.model.resnet') == 1
      and _floor('adanet_jax.tools.sweep') == 6
  )
  assert {m.split('.')[1] for m in graph if m != 'adanet_jax'} == {
      'errors',
      'config_lib',
      'model',
      'torch_model',
      'data',
      'train',
      'infer',
      'runtime',
      'main',
      'tools',
  }


def test_no_import_from_a_higher_floor():
  upward = [
      (m, i)
      for m, imported in _graph().items()
      for i in imported
      if _floor(i) > _floor(m)
  ]
  assert not upward, upward


def test_the_model_imports_only_itself_the_config_and_the_errors():
  allowed = ('adanet_jax.model', 'adanet_jax.config_lib', 'adanet_jax.errors')
  for module, imported in _graph().items():
    if module.startswith('adanet_jax.model'):
      outside = {
          i for i in imported if not i.startswith(allowed) and i != 'adanet_jax'
      }
      assert not outside, (module, outside)


def test_importing_the_library_changes_no_environment_variable():
  # The dependencies first (what they set on import is theirs: `import jax`
  # sets TPU_SKIP_MDS_QUERY), then every library module (not entry points)
  # but torch_model: torch is an optional extra that none of them loads.
  library = sorted(
      m
      for m in _module_files()
      if m not in _entry_points() and m != TORCH_MODEL
  )
  code = (
      'import os, sys, logging, jax, flax, optax, orbax.checkpoint, '
      'tensorflow, tensorflow_datasets\n'
      'before = dict(os.environ)\n'
      'handlers = list(logging.getLogger().handlers)\n'
      'config = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", '
      '"jax_persistent_cache_min_compile_time_secs", "jax_platforms")}\n'
      + ''.join(f'import {m}\n' for m in library)
      + 'assert "torch" not in sys.modules\n'
      + 'changed = {k for k in set(before) | set(os.environ) '
      'if before.get(k) != os.environ.get(k)}\n'
      'assert not changed, changed\n'
      'assert list(logging.getLogger().handlers) == handlers\n'
      'assert config == {k: getattr(jax.config, k) for k in config}\n'
      f'print({len(library)})\n'
  )
  env = {
      k: v
      for k, v in os.environ.items()
      if k
      not in ('TF_ENABLE_ONEDNN_OPTS', 'TF_CPP_MIN_LOG_LEVEL', 'GRPC_VERBOSITY')
  }
  out = subprocess.run(
      [sys.executable, '-c', code],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      env=env,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert int(out.stdout.strip().splitlines()[-1]) == len(library) > 30
