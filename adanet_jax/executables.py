"""Compiled steps kept across launches, found without tracing.

JAX's persistent compilation cache is keyed by the lowered program, so a
relaunch still traces and lowers the train step before it can load it (1.4 s
of a ResNet-110's 3.2 s warm start on a 2-core CPU). This cache keys the
serialized executable by everything the traced program depends on, known
before tracing:

- `description`: what the caller's function is built from (the run's config);
- the arguments' tree paths, shapes, dtypes and shardings (device ids
  included);
- the source of the adanet_jax package, the versions of jax, jaxlib, flax,
  optax and numpy, every `jax.config` value, XLA_FLAGS;
- the platform, its version, the device kinds and this process's index and
  count.

Anything else that changes the program (a function patched at run time) is
not seen, so the cache is off unless an entry point turns it on (`enable`):
`python -m adanet_jax.main` does, in-process library use does not. A
miss, an unreadable or damaged entry (a checksum covers it; it is then
removed) or a failed write falls back to
compiling (and JAX's own cache), with a warning for the last two; nothing is
lost but time. Only a step this process compiled is kept: one loaded from
JAX's cache serializes without some of its functions, so a launch that found
the step there leaves this cache as it was.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import pickle
import tempfile
from typing import Any

from absl import logging
import jax
from jax.experimental import serialize_executable

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_VERSIONED = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
SUBDIR = 'adanet_jax_executables'

_directory: str | None = None


def enable(cache_dir: str) -> str:
  """Keeps executables under `cache_dir`/adanet_jax_executables (JAX's own
  cache, in `cache_dir`, ignores that folder). Returns that folder."""
  global _directory
  _directory = os.path.join(cache_dir, SUBDIR)
  return _directory


def disable() -> None:
  global _directory
  _directory = None


# Where `load_or_compile` found the executable.
KEPT, JAX_CACHE, COMPILED = 'executable cache', 'compilation cache', 'compiled'


def load_or_compile(jitted, args: tuple, description: Any) -> tuple[Any, str]:
  """`jitted.lower(*args).compile()`, or the same executable from the cache.

  Args:
    jitted: a `jax.jit` function returning `(new args[0], extras)`, where
      extras is made of dicts, lists and tuples (a train step: the new state
      and its metrics). Other functions compile but are not kept.
    args: its positional arguments (arrays with their final shardings).
    description: JSON-able; everything besides the arguments that the traced
      function depends on (for the train step, the config).

  Returns:
    (the compiled function, where it came from: KEPT (this cache), JAX_CACHE
    (JAX's persistent compilation cache, after tracing and lowering) or
    COMPILED).
  """
  path = _entry_path(args, description) if _directory else None
  if path and os.path.exists(path):
    try:
      return _load(path, args), KEPT
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('executable cache: could not load %s (%s: %s); removed it, compiling '
                      'instead', path, type(e).__name__, e)
      with contextlib.suppress(OSError):
        os.remove(path)
  with CacheHitCounter() as hits:
    compiled = jitted.lower(*args).compile()
  if hits.count:
    # Not kept: an executable loaded from a cache serializes without some
    # of its compiled functions (XLA:CPU: "Function ... not found" when run).
    return compiled, JAX_CACHE
  if path:
    _store(path, compiled, args)
  return compiled, COMPILED


def _entry_path(args: tuple, description: Any) -> str:
  key = {'description': description, 'arguments': _signature(args), 'environment': _environment()}
  digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()
  return os.path.join(_directory, f'{digest}.exe')


def _signature(args: tuple) -> list:
  """Per array leaf: its tree path, shape, dtype, weak type and sharding."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(args)
  out = []
  for path, leaf in leaves:
    sharding = getattr(leaf, 'sharding', None)
    mesh = getattr(sharding, 'mesh', None)
    out.append([jax.tree_util.keystr(path), list(jax.numpy.shape(leaf)), str(leaf.dtype),
                bool(getattr(leaf, 'weak_type', False)), repr(sharding),
                None if mesh is None else mesh.device_ids.tolist()])
  return out


def _environment() -> dict:
  source = hashlib.sha256()
  for root, dirs, files in os.walk(_PACKAGE_DIR):
    dirs.sort()
    for name in sorted(f for f in files if f.endswith('.py')):
      with open(os.path.join(root, name), 'rb') as f:
        source.update(name.encode() + b'\0' + f.read() + b'\0')
  devices = jax.devices()
  return {
      'source': source.hexdigest(),
      'versions': {name: importlib.metadata.version(name) for name in _VERSIONED},
      'jax_config': sorted((k, repr(v)) for k, v in jax.config.values.items()),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'platform': [devices[0].client.platform, devices[0].client.platform_version],
      'device_kinds': sorted({d.device_kind for d in devices}),
      'process': [jax.process_index(), jax.process_count()],
  }


def _out_tree(args: tuple, extras_tree):
  """The tree of (new args[0], extras)."""
  extras = jax.tree.unflatten(extras_tree, [0] * extras_tree.num_leaves)
  return jax.tree.structure((args[0], extras))


def _load(path: str, args: tuple):
  with open(path, 'rb') as f:
    digest, payload = pickle.load(f)
  if hashlib.sha256(payload).hexdigest() != digest:  # a flipped bit could run as machine code
    raise ValueError('its checksum does not match its contents')
  serialized, extras_tree, device_ids = pickle.loads(payload)
  by_id = {d.id: d for d in jax.devices()}
  return serialize_executable.deserialize_and_load(
      serialized, jax.tree.structure((args, {})), _out_tree(args, extras_tree),
      execution_devices=[by_id[i] for i in device_ids])


def _store(path: str, compiled, args: tuple) -> None:
  """Writes the entry atomically (a partial file is never seen); a function
  whose output is not (new args[0], plain extras) is not kept."""
  children = compiled.out_tree.children()
  if len(children) != 2 or _out_tree(args, children[1]) != compiled.out_tree:
    return
  try:
    serialized, _, _ = serialize_executable.serialize(compiled)
    # The devices it runs on, in order (what JAX's own cache records too).
    devices = compiled._executable._unloaded_executable.device_list  # pylint: disable=protected-access
    payload = pickle.dumps((serialized, children[1], [d.id for d in devices]))
    blob = pickle.dumps((hashlib.sha256(payload).hexdigest(), payload))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
    try:
      with os.fdopen(fd, 'wb') as f:
        f.write(blob)
      os.chmod(tmp, 0o644)  # as JAX's own cache entries: readable by whoever shares it
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('executable cache: could not keep the step in %s (%s: %s)',
                    os.path.dirname(path), type(e).__name__, e)


class CacheHitCounter:
  """Counts persistent-compilation-cache hits while it is entered (JAX's
  monitoring events; `count` stays 0 when the cache is off or missed)."""

  HIT_EVENT = '/jax/compilation_cache/cache_hits'

  def __init__(self):
    self.count = 0

  def _listen(self, event: str, **kwargs) -> None:
    del kwargs
    if event == self.HIT_EVENT:
      self.count += 1

  def __enter__(self):
    jax.monitoring.register_event_listener(self._listen)
    return self

  def __exit__(self, *exc_info):
    jax.monitoring.unregister_event_listener(self._listen)
