"""From a config to a gated ResNet: model families, depth rules, per-block
targets and fixed blocks, scanned blocks and the backend's workarounds, and
the checks that reject a bad config before anything is compiled.
"""

import jax
import jax.numpy as jnp
import ml_collections

from adanet_jax.errors import ConfigError
from adanet_jax.model import norm, resnet, xla_cpu
from adanet_jax.model.gate import check_gate_mode

IMAGENET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
MODEL_NAMES = ('cifar_resnet', 'wide_resnet', 'imagenet_resnet')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
TARGET_SCHEDULES = ('uniform', 'resnet50_reference', 'resnet101_reference')
REDUCTIONS = ('mean', 'sum')
BN_GAMMA_INITS = ('ones', 'reference')
SCAN_BLOCKS = ('auto', 'on', 'off')
# Scanned runs are at least this long: shorter ones gain little compile time,
# and XLA's cost analysis counts a loop body once, so small models stay unrolled.
SCAN_MIN_RUN = 6


def bn_gamma_init(model_config: ml_collections.ConfigDict) -> str:
  """`model.bn_gamma_init`; configs written before the field existed mean 'ones'."""
  return model_config.get('bn_gamma_init', 'ones')


def stage_sizes(model_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Blocks per stage, after checking the depth against the family's rule."""
  name, depth = model_config.name, model_config.depth
  if name == 'cifar_resnet':
    if depth < 8 or (depth - 2) % 6:
      raise ConfigError(
          f'model.depth={depth} is not allowed for cifar_resnet: '
          'depth must be 6n+2 with n >= 1 (20, 32, 56, 110, ...)'
      )
    return ((depth - 2) // 6,) * 3
  if name == 'wide_resnet':
    if depth < 10 or (depth - 4) % 6:
      raise ConfigError(
          f'model.depth={depth} is not allowed for wide_resnet: '
          'depth must be 6n+4 with n >= 1 (10, 16, 28, 40, ...)'
      )
    return ((depth - 4) // 6,) * 3
  if name == 'imagenet_resnet':
    if depth not in IMAGENET_STAGES:
      raise ConfigError(
          f'model.depth={depth} is not allowed for imagenet_resnet: '
          f'allowed depths are {sorted(IMAGENET_STAGES)}'
      )
    return IMAGENET_STAGES[depth]
  raise ConfigError(
      f'model.name={name!r} is unknown; allowed: {", ".join(MODEL_NAMES)}'
  )


def num_blocks(model_config: ml_collections.ConfigDict) -> int:
  return sum(stage_sizes(model_config))


def block_targets(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """Per-block target execution rates resolved from `config.loss`.

  `loss.targets`, when non-empty, lists one target per block. Otherwise
  `loss.target_schedule` spreads `loss.target` (t): 'uniform' gives every block
  t; the reference schedules give ResNet-50
  [1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1] and ResNet-101 1 on the
  first 8 blocks and t on the other 25. A model without gates gets 1
  everywhere (its blocks always run).
  """
  loss, n = config.loss, num_blocks(config.model)
  t = loss.target
  if loss.targets:
    targets = tuple(float(v) for v in loss.targets)
    if len(targets) != n:
      raise ConfigError(
          f'loss.targets has {len(targets)} entries but the model has {n} '
          'gated blocks: give exactly one target per block, or () to use '
          'loss.target_schedule'
      )
  elif loss.target_schedule == 'uniform':
    targets = (t,) * n
  elif loss.target_schedule == 'resnet50_reference':
    targets = (1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1)
  elif loss.target_schedule == 'resnet101_reference':
    targets = (1,) * 8 + (t,) * 25
  else:
    raise ConfigError(
        f'loss.target_schedule={loss.target_schedule!r} is unknown; allowed: '
        f'{", ".join(TARGET_SCHEDULES)}'
    )
  if len(targets) != n:
    raise ConfigError(
        f'loss.target_schedule={loss.target_schedule!r} defines '
        f'{len(targets)} blocks but model {config.model.name}-'
        f'{config.model.depth} has {n}'
    )
  for i, v in enumerate(targets):
    if not 0.0 < v <= 1.0:
      field = f'loss.targets[{i}]' if loss.targets else 'loss.target'
      raise ConfigError(
          f'{field}={v} is outside (0, 1]: a target is the fraction of '
          'images that execute a block'
      )
  if not config.model.gated:
    return (1.0,) * n  # every block of a plain ResNet runs: no target-rate loss
  return tuple(float(v) for v in targets)


def fixed_blocks(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Blocks that always execute: those whose target is 1, if `gates.fix_target_one`.

  With `gates.fix_target_one=False` such blocks keep a stochastic gate and only
  leave the loss, as in the reference code.
  """
  if not (config.model.gated and config.gates.fix_target_one):
    return ()
  return tuple(i for i, t in enumerate(block_targets(config)) if t == 1.0)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field of a bad model, gate or loss value."""
  stage_sizes(config.model)
  block_targets(config)
  if config.model.dtype not in DTYPES:
    raise ConfigError(
        f'model.dtype={config.model.dtype!r} is unknown; allowed: '
        f'{", ".join(DTYPES)}'
    )
  if config.loss.reduction not in REDUCTIONS:
    raise ConfigError(
        f'loss.reduction={config.loss.reduction!r} is unknown; allowed: '
        f'{", ".join(REDUCTIONS)}'
    )
  for field in ('train_mode', 'eval_modes'):
    modes = config.gates[field]
    for mode in (modes,) if isinstance(modes, str) else modes:
      try:
        check_gate_mode(mode)
      except ConfigError as e:
        raise ConfigError(f'gates.{field}: {e}') from None
  if config.gates.temperature <= 0:
    raise ConfigError(
        f'gates.temperature={config.gates.temperature} must be > 0'
    )
  if bn_gamma_init(config.model) not in BN_GAMMA_INITS:
    raise ConfigError(
        f'model.bn_gamma_init={bn_gamma_init(config.model)!r} is unknown; '
        f'allowed: {", ".join(BN_GAMMA_INITS)}'
    )
  if config.model.width < 1:
    raise ConfigError(
        f'model.width={config.model.width} must be a positive integer'
    )
  if config.model.scan_blocks not in SCAN_BLOCKS:
    raise ConfigError(
        f'model.scan_blocks={config.model.scan_blocks!r} is unknown; allowed: '
        f'{", ".join(SCAN_BLOCKS)}'
    )


def scans_blocks(model_config: ml_collections.ConfigDict, backend: str) -> bool:
  """Whether runs of identical blocks are scanned on `backend`.

  'auto' scans only float32 models on XLA:CPU, where a benchmark showed that
  scanning helps the step (in bfloat16 there it only shortens the compile,
  and the step is slower); elsewhere the model stays unrolled.
  """
  return model_config.scan_blocks == 'on' or (
      model_config.scan_blocks == 'auto'
      and backend == 'cpu'
      and model_config.dtype == 'float32'
  )


def scan_attributes(config: ml_collections.ConfigDict, backend: str) -> dict:
  """The ResNet's scan attributes for `backend`: off, or runs of SCAN_MIN_RUN
  blocks, with XLA:CPU's workarounds (`xla_cpu`) on the CPU backend."""
  if not scans_blocks(config.model, backend):
    return {}
  attributes = dict(scan_min_run=SCAN_MIN_RUN)
  if backend == 'cpu':
    attributes['loop_conv_fn'] = xla_cpu.loop_conv
    if jnp.dtype(DTYPES[config.model.dtype]).itemsize == 2:
      attributes['scan_body_wrapper'] = xla_cpu.sixteen_bit_residuals
  return attributes


def create_model(
    config: ml_collections.ConfigDict, backend: str | None = None
) -> resnet.ResNet:
  """The ResNet that `config` describes; `checks.validate` (which runs
  `validate`) has checked it.

  Args:
    config: the run's config.
    backend: the JAX backend the model will run on ('cpu', 'gpu', 'tpu'),
      which resolves `model.scan_blocks`; default `jax.default_backend()`.
  """
  m = config.model
  sizes = stage_sizes(m)
  bn_init, gate_bn_init = norm.gamma_inits(bn_gamma_init(m), m.name)
  common = dict(
      num_classes=m.num_classes,
      gated=m.gated,
      fixed_blocks=fixed_blocks(config),
      gate_hidden=config.gates.hidden,
      temperature=config.gates.temperature,
      bn_scale_init=bn_init,
      gate_bn_scale_init=gate_bn_init,
      dtype=DTYPES[m.dtype],
      **scan_attributes(config, backend or jax.default_backend()),
  )
  if m.name == 'cifar_resnet':
    k = m.width
    return resnet.ResNet(
        block='basic',
        stage_sizes=sizes,
        stage_widths=(16 * k, 32 * k, 64 * k),
        stem='cifar',
        stem_width=16 * k,
        conv_init='torch',
        **common,
    )
  if m.name == 'wide_resnet':
    k = m.width
    return resnet.ResNet(
        block='preact',
        stage_sizes=sizes,
        stage_widths=(16 * k, 32 * k, 64 * k),
        stem='wrn',
        stem_width=16,
        conv_init='he_fan_out',
        **common,
    )
  return resnet.ResNet(
      block='bottleneck',
      stage_sizes=sizes,
      stage_widths=tuple(64 * m.width * 2**i for i in range(4)),
      stem='imagenet',
      stem_width=64,
      conv_init='he_fan_out',
      **common,
  )
