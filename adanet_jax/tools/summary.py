"""Model summary: per-block parameters, MACs, gate status and target
execution rate, and totals.

  python -m adanet_jax.tools.summary --config=configs/cifar10.py[:args] [--config.a.b=v] [--json]

Nothing is compiled: shapes come from an abstract trace of the model. Blocks
are listed in execution order.
"""

import json

from absl import flags
import jax
import jax.numpy as jnp

from adanet_jax import config_lib
from adanet_jax.model import accounting, factory
from adanet_jax.runtime import cli
from adanet_jax.train import checks


def define_flags() -> dict:
  return dict(
      config=flags.DEFINE_string(
          'config', None, 'Config file, with optional :arg.'
      ),
      json=flags.DEFINE_bool(
          'json', False, 'Print one JSON object instead of a table.'
      ),
  )


def summarize(config) -> dict:
  """Returns the summary of the model `config` describes as a dict."""
  model = factory.create_model(config)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  params = jax.eval_shape(
      lambda: model.init(
          {'params': jax.random.key(0)}, jnp.zeros((1, *shape)), train=False
      )
  )['params']
  costs = accounting.cost_table(model, shape)
  fixed = set(factory.fixed_blocks(config))
  targets = factory.block_targets(config)
  blocks = []
  for i, name in enumerate(costs.blocks):
    block_params = _count(params[name])
    status = (
        'plain'
        if not config.model.gated
        else 'fixed'
        if i in fixed
        else 'gated'
    )
    # The target rate of the loss; a plain model runs every block (1.0).
    target = float(targets[i]) if config.model.gated else 1.0
    blocks.append(
        dict(
            index=i,
            name=name,
            status=status,
            target=target,
            params=block_params,
            gate_params=_count(params[name].get('gate', {})),
            branch_macs=costs.branch[i],
            shortcut_macs=costs.shortcut[i],
            gate_macs=costs.gate[i],
            gate_pool_adds=costs.gate_pool_adds[i],
        )
    )
  return dict(
      model=f'{config.model.name}-{config.model.depth}',
      image_shape=list(shape),
      params=_count(params),
      gate_params=sum(b['gate_params'] for b in blocks),
      macs=costs.dense,
      macs_baseline=costs.baseline,
      gate_macs=sum(costs.gate),
      gflops=2 * costs.dense / 1e9,
      blocks=len(blocks),
      gated_blocks=sum(b['status'] == 'gated' for b in blocks),
      fixed_blocks=sorted(fixed),
      units='1 MAC = one multiply-add; FLOPs = 2 x MACs',
      per_block=blocks,
  )


def format_table(summary: dict) -> str:
  lines = [
      f"{summary['model']}  input {summary['image_shape']}  ({summary['units']})",
      f"{'#':>3} {'block':<16} {'status':<6} {'target':>6} {'params':>11} {'gate params':>11} "
      f"{'branch MACs':>13} {'shortcut MACs':>13} {'gate MACs':>9}",
  ]
  for b in summary['per_block']:
    lines.append(
        f"{b['index']:>3} {b['name']:<16} {b['status']:<6} {b['target']:>6.2f} "
        f"{b['params']:>11,} "
        f"{b['gate_params']:>11,} {b['branch_macs']:>13,} {b['shortcut_macs']:>13,} "
        f"{b['gate_macs']:>9,}"
    )
  lines.append(
      f"total: {summary['params']:,} params ({summary['gate_params']:,} in gates); "
      f"{summary['macs']:,} MACs = {summary['macs'] / 1e9:.4f} GMACs with every block run "
      f"({summary['gflops']:.4f} GFLOPs); without gates {summary['macs_baseline']:,} MACs; "
      f"{summary['gated_blocks']} gated, {len(summary['fixed_blocks'])} fixed of "
      f"{summary['blocks']} blocks"
  )
  return '\n'.join(lines)


def _count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def main(args) -> None:
  cli.require(args, 'config')
  # shapes only: no accelerator needed
  jax.config.update('jax_platforms', 'cpu')
  summary = summarize(
      checks.validate(config_lib.load_config(args.config, args.overrides))
  )
  print(json.dumps(summary) if args.json else format_table(summary))


if __name__ == '__main__':
  cli.run(main, define_flags)
