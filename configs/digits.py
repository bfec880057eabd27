"""The main job: a gated CIFAR-style ResNet on scikit-learn's 8x8 digits.

Offline (the digits ship with scikit-learn), 1,437 training and 360 test
images (every 5th image is a test image). Runs on one CPU in a few minutes:

  python -m adanet_jax.main --config=configs/digits.py --workdir=workdirs/digits

Argument string: depth (6n+2, default 20), gated (default true), target
(default 0.6), epochs (default 100).

Expected on a 2-core CPU: test accuracy >= 97% with deterministic gates and a
mean execution rate of the gated blocks within 0.05 of the target.
"""

from adanet_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(
      arg, depth=20, gated=True, target=0.6, epochs=100.0
  )
  config = config_lib.get_base_config()
  config.model.name = 'cifar_resnet'
  config.model.depth = args.depth
  config.model.gated = args.gated
  config.model.num_classes = 10
  config.data.name = 'digits'
  config.data.image_size = 8
  config.data.channels = 1
  config.loss.target = args.target
  config.loss.weight = 2.0
  config.optim.base_learning_rate = 0.1
  config.optim.base_batch_size = 128
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'cosine'
  config.optim.warmup_epochs = 1.0
  config.train.batch_size = 128
  config.train.num_epochs = args.epochs
  config.train.log_every_steps = 44
  config.train.eval_every_epochs = 10.0
  config.eval.batch_size = 128
  config.checkpoint.every_steps = 110
  config.lock()
  return config


def get_sweeps():
  """Sweeps of this config (python -m adanet_jax.tools.sweep --config=configs/digits.py ...).

  targets: the accuracy/compute trade-off: t in {0.3, 0.5, 0.7, 1.0 (every
    block fixed on)} and the gates-off baseline.
  smoke: three targets, for a quick check of the sweep machinery.
  pareto: six points for the accuracy/compute figure: t in {0.3, 0.4, 0.5,
    0.7, 1.0} and the gates-off baseline (which t = 1.0 meets).
  """
  from adanet_jax.tools.sweep import grid  # pylint: disable=import-outside-toplevel

  targets = grid(**{'loss.target': [0.3, 0.5, 0.7, 1.0], 'seed': [0]})
  return {
      'targets': targets + [{'model.gated': False, 'seed': 0}],
      'smoke': grid(**{'loss.target': [0.3, 0.5, 0.7], 'seed': [0]}),
      'pareto': grid(**{'loss.target': [0.3, 0.4, 0.5, 0.7, 1.0], 'seed': [0]})
      + [{'model.gated': False, 'seed': 0}],
  }
