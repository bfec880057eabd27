"""CIFAR-10 ConvNet-AIG: ResNet-110 with gates at target 0.7 (paper Table 1).

Argument string (all optional): depth (6n+2, default 110), width (widening
factor, default 1), gated (true/false), target (default 0.7), classes.

  python -m adanet_jax.summary --config=configs/cifar10.py
  python -m adanet_jax.summary --config=configs/cifar10.py:depth=20,gated=false

Paper, for comparison: ConvNet-AIG 110 at t = 0.7, 5.76% test error, 0.41
GFLOPs (2 x MACs) with 82% of the layers executed; ResNet-110 6.61%.
"""

from adanet_jax import config_base


def get_config(arg=None):
  args = config_base.parse_arg(arg, depth=110, width=1, gated=True, target=0.7, classes=10)
  config = config_base.get_base_config()
  config.model.name = 'cifar_resnet'
  config.model.depth = args.depth
  config.model.width = args.width
  config.model.gated = args.gated
  config.model.num_classes = args.classes
  config.loss.target = args.target
  config.loss.weight = 2.0
  config.loss.reduction = 'mean'
  config.lock()
  return config
