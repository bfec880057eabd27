"""CIFAR-10 ConvNet-AIG: ResNet-110 with gates at t = 0.7 (paper Table 1), the
reference code's recipe.

Runbook (one host, all its accelerators; data from tfds `cifar10`, prepared
once with network access, see `adanet_jax/data/tfds_pipeline.py`):

  python -m adanet_jax.main --config=configs/cifar10.py --workdir=workdirs/cifar10_aig110_t07
  python -m adanet_jax.main --config=configs/cifar10.py:gated=false \
      --workdir=workdirs/cifar10_resnet110          # the gates-off baseline
  python -m adanet_jax.tools.summary --config=configs/cifar10.py       # params, MACs per block

Argument string (all optional): depth (6n+2, default 110), width (widening
factor, default 1), gated (default true), target (t, default 0.7), epochs
(default 350). The LR drops at 3/7 and 5/7 of the training (epochs 150
and 250 of 350), fractions derived in code, so `--config.train.num_epochs`
moves them too.

Recipe (reference train.py): SGD, momentum 0.9, no Nesterov, LR 0.1 at batch
256 (scaled linearly if train.batch_size changes), x0.1 at epochs 150 and 250,
350 epochs (68,250 steps of 256), weight decay 5e-4 coupled L2 on every
parameter, target-rate loss weight 2 averaged over the 54 blocks; 4-pixel
pad + random 32 crop + flip, per-channel normalisation. Evaluation every 10
epochs on all 10,000 test images, deterministic gates and the paper's
"110*" expected mode.

Hardware and time: one GPU. The train step alone (experiments/benchmark_step.py,
batch 256, one H200, JAX 0.11.2) ran at 4,650 images/s in float32 and 6,130
in bfloat16 (`--config.model.dtype=bfloat16`): the 17.5 M training images
take about 65 / 50 minutes, plus evaluation. The pipeline must keep up: it
decoded and augmented about 10,000 CIFAR images/s on 2 CPU cores
(`experiments/results/input_benchmark.txt`). On this project's 2-core CPU a
step of 128 takes about 8-18 s: CPU is for smoke tests only.

Initialisation: as the reference model (PyTorch 0.3.1), every BatchNorm gamma
(stem, blocks, shortcuts, gates) starts U(0, 1), the init the paper's numbers
were trained from (`model.bn_gamma_init='reference'`; 'ones' for gammas of 1).
The wide config inherits it: there only the gates' BatchNorm starts U(0, 1).

Compare with the paper: ConvNet-AIG 110 at t = 0.7, 5.76% test error, 0.41
GFLOPs (2 x MACs) with 82% of the layers executed; ConvNet-AIG 110* (expected
mode) 5.14%; ResNet-110 6.61%. Users of the reference code reported 6.68%.
"""

from adanet_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(
      arg, depth=110, width=1, gated=True, target=0.7, epochs=350.0
  )
  config = config_lib.get_base_config()
  config.model.name = 'cifar_resnet'
  config.model.depth = args.depth
  config.model.width = args.width
  config.model.gated = args.gated
  config.model.num_classes = 10
  config.model.bn_gamma_init = (
      'reference'  # U(0, 1) gammas, as the paper's runs started
  )
  config.data.name = 'cifar10'
  config.data.image_size = 32
  config.data.channels = 3
  config.gates.eval_modes = ('deterministic', 'expected')
  config.loss.target = args.target
  config.loss.weight = 2.0
  config.loss.reduction = 'mean'
  config.optim.base_learning_rate = 0.1
  config.optim.base_batch_size = 256
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'step'
  # epochs 150 and 250 of 350
  config.optim.decay_fractions = (
      150 / 350,
      250 / 350,
  )
  config.optim.decay_factor = 0.1
  config.train.batch_size = 256
  config.train.num_epochs = args.epochs
  config.train.eval_every_epochs = 10.0
  config.eval.batch_size = (
      1024  # divides over 2^k devices; the last batch is padded
  )
  config.lock()
  return config
