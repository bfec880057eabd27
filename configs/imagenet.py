"""ImageNet ConvNet-AIG: ResNet-50/101/152 with the reference per-layer targets.

Argument string: the architecture first (resnet50 default, resnet101,
resnet152), then optional t (the target of the non-fixed blocks; default 0.6
for ResNet-50, 0.5 for ResNet-101/152) and gated (true/false).

  python -m adanet_jax.summary --config=configs/imagenet.py:resnet50
  python -m adanet_jax.summary --config=configs/imagenet.py:resnet101,t=0.3

Per-layer targets (reference README): ResNet-50
[1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1]; ResNet-101 1 on the
first 8 blocks and t on the other 25; ResNet-152 (not in the paper) t
everywhere. Blocks with target 1 always execute (gates.fix_target_one).
Paper (Fig. 3), top-1 error: ConvNet-AIG 50 at t = 0.4/0.5/0.6/0.7 24.7 /
24.4 / 24.2 / 23.8% at 2.56 / 2.71 / 2.88 / 3.06 GFLOPs; ConvNet-AIG 101 at
t = 0.3/0.5 23.0 / 22.6% at 4.34 / 5.11 GFLOPs; ResNet-50 23.9%, ResNet-101
22.6%.
"""

from adanet_jax import config_base

_ARCHS = {'resnet50': (50, 'resnet50_reference', 0.6),
          'resnet101': (101, 'resnet101_reference', 0.5),
          'resnet152': (152, 'uniform', 0.5)}


def get_config(arg=None):
  args = config_base.parse_arg(arg, positional='arch', arch='resnet50', t=-1.0, gated=True)
  if args.arch not in _ARCHS:
    raise config_base.ConfigError(f'config argument arch={args.arch!r} is unknown; allowed: '
                     f'{", ".join(_ARCHS)}')
  depth, schedule, default_t = _ARCHS[args.arch]
  config = config_base.get_base_config()
  config.model.name = 'imagenet_resnet'
  config.model.depth = depth
  config.model.gated = args.gated
  config.model.num_classes = 1000
  config.data.name = 'imagenet2012'
  config.data.image_size = 224
  config.loss.target = default_t if args.t < 0 else args.t
  config.loss.target_schedule = schedule
  config.loss.weight = 1.0
  config.loss.reduction = 'mean'
  config.lock()
  return config
