"""Benchmark (not a test): inference time of the skipping path against the
masked model, at execution rates from 1.0 down to 0.3.

  python -m experiments.benchmark_skip [--config=configs/cifar10.py] \
      [--batch_sizes=1,32,256] [--rates=1.0,0.9,...,0.3] [--repeats=3] \
      [--plot=experiments/results/skip_speedup.png]

The default is the CIFAR ResNet-110 at 32x32 (any config works, e.g.
`--config=configs/imagenet.py:resnet50 --image_size=64`), on the CPU, with
random weights: only the gate decisions matter for speed, and they are set.

How a rate is set: the gate kernels are random (std 3, so decisions depend on
the image) and each gated block l gets its own rate r_l, drawn uniformly
within `--spread` (default 0.1, never above 1) of the rate r, so that the
blocks' counts of open images fill their last chunks anywhere, as a trained
model's would. `skip_inference.set_open_counts` then shifts every gate bias
so that exactly round(r_l x N) of the N benchmark images run block l (N = the
largest batch, or --images if larger). Fixed blocks always run. A batch of b
images is a slice of those N, so its counts vary around r_l x b, and at
batch 1 an image runs about a fraction r of the blocks. The table gives the
rate actually executed.

Columns: `rate` the target r; `executed` the mean fraction of gated blocks
executed; `masked_ms` and `skip_ms` the time per batch of the masked model
and of `skip_inference.skip_apply` (both compiled and run once before any
timing; each point times the same `max(b, --images)` images in batches of b,
the median of --repeats, masked and skip alternating so that load on the
machine hits both alike; the two must agree on every gate decision and on the
logits); `speedup` masked / skip; `ideal` dense MACs / mean executed MACs per
image (`accounting.cost_table`: what a perfect skip would gain, the always-run
parts included); `measured/ideal` their ratio; `own/ideal` the same with the
skipping path's own time at rate 1.0 in place of the masked time (on XLA:CPU
the program with conditionals runs every block faster than the flat masked
program does, which `measured/ideal` credits to skipping).

Writes the table (printed, and as .md/.csv next to the plot) and the plot:
speedup against the executed fraction, measured and ideal, per batch size.
"""

import os
import time

from absl import app, flags
import jax
from ml_collections import config_flags
import numpy as np

from adanet_jax.infer import skip_inference
from adanet_jax.model import accounting, factory
from adanet_jax.runtime import jax_setup
from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/cifar10.py', 'Config file.', lock_config=True
)
_BATCH_SIZES = flags.DEFINE_list(
    'batch_sizes', ['1', '32', '256'], 'Batch sizes to time.'
)
_RATES = flags.DEFINE_list(
    'rates',
    ['1.0', '0.9', '0.8', '0.7', '0.6', '0.5', '0.4', '0.3'],
    'Target execution rates of the gated blocks.',
)
_REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Timed repeats per point (median).'
)
_IMAGES = flags.DEFINE_integer(
    'images', 64, 'Images timed per point at small batches.'
)
_SPREAD = flags.DEFINE_float(
    'spread', 0.1, 'Per-block rates are the target +- this.'
)
_CHUNKS = flags.DEFINE_integer(
    'chunks',
    skip_inference.DEFAULT_CHUNKS,
    'Open samples of mixed batches run in chunks of batch/chunks.',
)
_IMAGE_SIZE = flags.DEFINE_integer(
    'image_size', 0, "Image side (0: the config's)."
)
_PLOT = flags.DEFINE_string(
    'plot',
    'experiments/results/skip_speedup.png',
    'Where the plot goes; the table goes next to it (.md, .csv).',
)
_CACHE = flags.DEFINE_string(
    'cache_dir', None, 'Persistent compilation cache directory.'
)


def random_variables(model, images, seed: int = 0):
  """Random init, with gate kernels large enough that decisions vary by image."""
  variables = jax.jit(
      lambda x: model.init({'params': jax.random.key(seed)}, x, train=False)
  )(images[:1])
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  gate_kernel = ('gate', 'fc2', 'kernel')
  leaves = [
      3.0 * jax.random.normal(k, leaf.shape)
      if tuple(getattr(p, 'key', None) for p in path[-3:]) == gate_kernel
      else leaf
      for k, (path, leaf) in zip(keys, leaves)
  ]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def block_counts(
    num_blocks: int, rate: float, spread: float, num_images: int, seed: int = 0
) -> list[int]:
  """Open images per block: round(r_l x N), r_l uniform in rate +- spread, <= 1."""
  spread = min(spread, 1.0 - rate)
  rates = rate + np.random.default_rng(seed).uniform(
      -spread, spread, num_blocks
  )
  return [int(c) for c in np.round(np.clip(rates, 0.0, 1.0) * num_images)]


def time_point(fns: dict, variables, batches, repeats: int):
  """Median seconds per batch of each fn over `batches` (fns alternating), and
  each fn's outputs of the last repeat, concatenated over the batches."""
  times = {name: [] for name in fns}
  for _ in range(repeats):
    outputs = {}
    for name, fn in fns.items():
      start = time.perf_counter()
      # One call at a time, as a server would; waiting also keeps XLA:CPU from queueing.
      outputs[name] = [
          jax.block_until_ready(fn(variables, batch)) for batch in batches
      ]
      times[name].append((time.perf_counter() - start) / len(batches))
  concat = lambda *xs: np.concatenate([np.asarray(x) for x in xs])  # noqa: E731
  return (
      {name: float(np.median(t)) for name, t in times.items()},
      {name: jax.tree.map(concat, *out) for name, out in outputs.items()},
  )


def compile_seconds(fns: dict, variables, batch) -> dict:
  """Compiles (and runs once) each fn on `batch`; returns the seconds each took."""
  seconds = {}
  for name, fn in fns.items():
    start = time.perf_counter()
    jax.block_until_ready(fn(variables, batch))
    seconds[name] = time.perf_counter() - start
  return seconds


def benchmark(
    model,
    images,
    batch_sizes,
    rates,
    *,
    repeats: int,
    spread: float,
    chunks: int,
    images_per_point: int,
) -> list[dict]:
  """One row per (batch size, rate); see the module docstring for the columns."""
  costs = accounting.cost_table(model, images.shape[1:])
  base = random_variables(model, images)
  by_rate = {
      r: skip_inference.set_open_counts(
          model,
          base,
          images,
          block_counts(model.num_blocks, r, spread, len(images)),
      )
      for r in rates
  }
  fns = {
      'masked': jax.jit(
          lambda v, x: model.apply(v, x, train=False, gate_mode='deterministic')
      ),
      'skip': lambda v, x: skip_inference.skip_apply(
          model, v, x, chunks=chunks
      ),
  }
  free = [i for i in range(model.num_blocks) if i not in model.fixed_blocks]
  rows = []
  for b in batch_sizes:
    batches = [images[i : i + b] for i in range(0, max(b, images_per_point), b)]
    seconds = compile_seconds(fns, base, batches[0])
    print(
        f'batch {b}: compile + first run '
        + ', '.join(f'{k} {v:.1f} s' for k, v in seconds.items()),
        flush=True,
    )
    for rate in rates:
      t, out = time_point(fns, by_rate[rate], batches, repeats)
      gates = out['skip'][1]['gates']
      # The two paths must compute the same thing, or the timing means nothing.
      np.testing.assert_array_equal(gates, out['masked'][1]['gates'])
      np.testing.assert_allclose(
          out['skip'][0], out['masked'][0], rtol=1e-4, atol=1e-4
      )
      ideal = costs.dense / float(np.mean(costs.per_image(gates)))
      rows.append(
          {
              'batch': b,
              'rate': rate,
              'executed': float(gates[:, free].mean()),
              'masked_ms': 1e3 * t['masked'],
              'skip_ms': 1e3 * t['skip'],
              'speedup': t['masked'] / t['skip'],
              'ideal': ideal,
              'measured/ideal': t['masked'] / t['skip'] / ideal,
          }
      )
      print(' '.join(f'{k} {v:.4g}' for k, v in rows[-1].items()), flush=True)
  return with_own_scaling(rows)


def with_own_scaling(rows: list[dict]) -> list[dict]:
  """Adds 'own/ideal': the skipping path's time at rate 1.0 over its time at
  the row's rate, divided by the ideal speedup (None without a rate-1.0 row)."""
  dense = {r['batch']: r['skip_ms'] for r in rows if r['rate'] == 1.0}
  return [
      {
          **r,
          'own/ideal': dense[r['batch']] / r['skip_ms'] / r['ideal']
          if r['batch'] in dense
          else None,
      }
      for r in rows
  ]


def plot(rows: list[dict], title: str, path: str) -> str:
  """Speedup against executed fraction: measured (solid), ideal (dashed)."""
  fig, axes = common.new_figure()
  ax = axes[0, 0]
  for i, b in enumerate(sorted({r['batch'] for r in rows})):
    points = [r for r in rows if r['batch'] == b]
    x = [r['executed'] for r in points]
    ax.plot(
        x,
        [r['speedup'] for r in points],
        'o-',
        color=f'C{i}',
        label=f'batch {b}, measured',
    )
    ax.plot(
        x,
        [r['ideal'] for r in points],
        '--',
        color=f'C{i}',
        alpha=0.6,
        label=f'batch {b}, ideal (MACs)',
    )
  ax.axhline(1.0, color='grey', lw=0.8)
  ax.set_xlabel('fraction of gated blocks executed')
  ax.set_ylabel('speedup over the masked model (x)')
  ax.set_title(title)
  ax.legend(fontsize='small')
  out, name = os.path.split(os.path.splitext(path)[0])
  return common.save_figure(fig, out, name)


def main(argv):
  del argv
  jax_setup.enable_compilation_cache(_CACHE.value)
  config = _CONFIG.value
  model = factory.create_model(config)
  size = _IMAGE_SIZE.value or config.data.image_size
  batch_sizes = sorted(int(b) for b in _BATCH_SIZES.value)
  count = max(max(batch_sizes), _IMAGES.value)
  noise, offset = jax.random.split(jax.random.key(0))
  # Per-image channel offsets make images, and so gate logits, differ.
  images = jax.random.normal(
      noise, (count, size, size, config.data.channels)
  ) + 2 * jax.random.normal(offset, (count, 1, 1, config.data.channels))
  name = f'{config.model.name}-{config.model.depth}'
  print(
      f'{name} at {size}x{size}, {jax.default_backend()} ({os.cpu_count()} cores), '
      f'{_CHUNKS.value} chunks, {_REPEATS.value} repeats',
      flush=True,
  )
  rows = benchmark(
      model,
      images,
      batch_sizes,
      [float(r) for r in _RATES.value],
      repeats=_REPEATS.value,
      spread=_SPREAD.value,
      chunks=_CHUNKS.value,
      images_per_point=_IMAGES.value,
  )
  out, stem = os.path.split(os.path.splitext(_PLOT.value)[0])
  paths = common.write_table(rows, out, stem)
  with open(paths['md']) as f:
    print(f.read())
  title = f'Skipping closed blocks: {name}, {size}x{size}, {jax.default_backend().upper()}'
  print('wrote', plot(rows, title, _PLOT.value), paths['md'], paths['csv'])


if __name__ == '__main__':
  app.run(main)
