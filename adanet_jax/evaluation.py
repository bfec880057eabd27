"""Evaluation over a whole split, in each gate mode the config asks for.

Every example counts exactly once: the pipeline pads the last batch and masks
the padding. Results: accuracy, loss, mean and per-block execution rates,
mean exact MACs per image, the paper-style GFLOPs, and the per-class x
per-block execution matrix (paper Fig. 4), written to the workdir.
"""

import os

import jax
import numpy as np

from adanet_jax import accounting


def summarize(sums: dict, costs: accounting.CostTable, fixed_blocks, gated: bool) -> dict:
  """Turns the summed eval outputs into metrics (host-side, exact)."""
  count = float(sums['count'])
  rates = np.asarray(sums['gates'], np.float64) / count
  free = [i for i in range(len(rates)) if i not in set(fixed_blocks)] if gated else []
  macs = costs.always + float(rates @ np.asarray(costs.branch, np.float64))
  return {
      'count': int(count),
      'accuracy': float(sums['correct']) / count,
      'loss': float(sums['ce']) / count,
      'gate_rate': float(rates.mean()),
      'gated_block_rate': float(rates[free].mean()) if free else 1.0,
      'gate_rates': [float(r) for r in rates],
      'macs_per_image': macs,
      'gflops_per_image': 2 * macs / 1e9,
      'paper_gflops': 2 * costs.baseline * float(rates.mean()) / 1e9,
  }


def class_block_rates(sums: dict) -> np.ndarray:
  """(classes, blocks): fraction of each class's images that run each block."""
  counts = np.asarray(sums['class_count'], np.float64)[:, None]
  return np.asarray(sums['class_gates'], np.float64) / np.maximum(counts, 1)


def evaluate(eval_step, state, batches, to_global) -> dict:
  """Runs `eval_step` over `batches` and returns the summed outputs (numpy).

  Sums stay on the device and are fetched once at the end; each step is
  waited on, which also keeps multi-device CPU runs from deadlocking.
  """
  total = None
  for batch in batches:
    out = eval_step(state, to_global(batch))
    total = out if total is None else jax.tree.map(lambda a, b: a + b, total, out)
    jax.block_until_ready(total)
  return jax.tree.map(np.asarray, jax.device_get(total))


def save_class_block_rates(workdir: str, step: int, mode: str, matrix: np.ndarray) -> str:
  """Writes the per-class x per-block matrix as CSV; returns its path."""
  directory = os.path.join(workdir, 'eval')
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'class_block_rates_{mode}_step{step:08d}.csv')
  header = 'class,' + ','.join(f'block{i}' for i in range(matrix.shape[1]))
  rows = [f'{k},' + ','.join(f'{v:.6f}' for v in row) for k, row in enumerate(matrix)]
  with open(path, 'w') as f:
    f.write('\n'.join([header] + rows) + '\n')
  return path
