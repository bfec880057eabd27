"""Evaluation over a whole split, in each gate mode the config asks for.

Every example counts exactly once: the pipeline pads the last batch and masks
the padding. Results: accuracy, loss, mean and per-block gate values, mean
exact MACs per image (from the branches that ran: in `expected` mode all of
them), the paper-style GFLOPs, and the per-class x per-block execution matrix
(paper Fig. 4). `Evaluator` returns them; its caller writes files. In gate
mode `sample` the noise is a function of (seed, step of the state, batch
index) (`steps.eval_key`): evaluating one checkpoint twice gives the same.
"""

import functools

import jax
import numpy as np

from adanet_jax.model import accounting
from adanet_jax.train import placement as placement_lib
from adanet_jax.train import plan as plan_lib
from adanet_jax.train import steps


def summarize(
    sums: dict, costs: accounting.CostTable, fixed_blocks, gated: bool
) -> dict:
  """Turns the summed eval outputs into metrics (host-side, exact).

  `gate_rate(s)` are the mean gate values (execution probabilities in
  `expected` mode); MACs and GFLOPs count the branches that were computed.
  """
  count = float(sums['count'])
  rates = np.asarray(sums['gates'], np.float64) / count
  executed = np.asarray(sums['executed'], np.float64) / count
  free = (
      [i for i in range(len(rates)) if i not in set(fixed_blocks)]
      if gated
      else []
  )
  macs = float(costs.per_image(executed))
  return {
      'count': int(count),
      'accuracy': float(sums['correct']) / count,
      'loss': float(sums['ce']) / count,
      'gate_rate': float(rates.mean()),
      'gated_block_rate': float(rates[free].mean()) if free else 1.0,
      'gate_rates': [float(r) for r in rates],
      'macs_per_image': macs,
      'gflops_per_image': 2 * macs / 1e9,
      'paper_gflops': 2 * costs.paper_convention(executed) / 1e9,
  }


def class_block_rates(sums: dict) -> np.ndarray:
  """(classes, blocks): fraction of each class's images that run each block."""
  counts = np.asarray(sums['class_count'], np.float64)[:, None]
  return np.asarray(sums['class_gates'], np.float64) / np.maximum(counts, 1)


def evaluate(
    eval_step, state, batches, placement: placement_lib.Placement, key
) -> dict:
  """Runs `eval_step(state, batch, key, batch index)` over `batches` and
  returns the summed outputs (numpy).

  Sums stay on the device and are fetched once at the end; each step is
  waited on, which also keeps multi-device CPU runs from deadlocking.
  """
  total = None
  for index, batch in enumerate(batches):
    out = eval_step(
        state,
        placement.to_global(batch),
        key,
        placement.replicate(np.int32(index)),
    )
    total = (
        out if total is None else jax.tree.map(lambda a, b: a + b, total, out)
    )
    jax.block_until_ready(total)
  return jax.tree.map(np.asarray, jax.device_get(total))


class Evaluator:
  """Evaluates a train state on a dataset's evaluation split in each of the
  plan's gate modes, with eval steps jitted over the placement."""

  def __init__(
      self,
      plan: plan_lib.RunPlan,
      placement: placement_lib.Placement,
      costs: accounting.CostTable,
  ):
    self.plan, self.placement, self.costs = plan, placement, costs
    r, d = placement.replicated, placement.data
    self.eval_steps = {
        mode: jax.jit(
            functools.partial(
                steps.eval_step, gate_mode=mode, num_classes=plan.num_classes
            ),
            in_shardings=(r, d, r, r),
            out_shardings=r,
        )
        for mode in plan.eval_gate_modes
    }
    self.key = placement.seed_key(plan.seed)

  def __call__(self, state, dataset) -> tuple[dict, dict[str, np.ndarray]]:
    """Evaluates `state` on `dataset.eval_batches()`.

    Returns:
      ({'eval/<mode>/<metric>': value}, {mode: `class_block_rates` matrix}).
    """
    results, matrices = {}, {}
    for mode, eval_step in self.eval_steps.items():
      sums = evaluate(
          eval_step,
          state,
          dataset.eval_batches(),
          self.placement,
          self.key,
      )
      summary = summarize(
          sums, self.costs, self.plan.fixed_blocks, self.plan.gated
      )
      results.update({f'eval/{mode}/{k}': v for k, v in summary.items()})
      matrices[mode] = class_block_rates(sums)
    return results, matrices
