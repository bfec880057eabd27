"""A PyTorch twin of the gated ResNets, for parity tests and benchmarks.

Written here from the facts in `shared/reference/convnet-aig.md` (sections 1,
2 and 7), not from the authors' code. The `state_dict` keys follow the
reference ConvNet-AIG model: `conv1`, `bn1` (stem), `layer{s}.{i}.conv{1,2,3}`,
`.bn{1,2,3}`, `.shortcut.0` (1x1 conv) and `.shortcut.1` (its BatchNorm) where
the shape changes, the gate `.fc1` (1x1 conv, with bias), `.fc1bn`, `.fc2`,
and `linear`. The wide family has no reference model; its layout is ours:
pre-activation blocks `layer{s}.{i}.bn1`, `.conv1`, `.bn2`, `.conv2`,
`.shortcut.0` (1x1 conv, no BatchNorm) and the final `bn_final` before the
pool. Input is NCHW.

  net = torch_twin.from_config(config)           # torch.nn.Module
  logits, aux = net(x, gate_mode='sample', noise=g)
  aux['gates'], aux['probs']                     # (B, blocks)
  aux['logits']                                  # (B, blocks, 2), before noise

The gate is the straight-through Gumbel-softmax of the reference: forward
value 1[l1 + g1 > l0 + g0], gradient that of softmax(l + g)[1] (temperature
1, as the reference ignores its argument). `noise` (B, blocks, 2) is the
Gumbel noise of mode 'sample' (drawn here if None; `gumbel_noise(key, ...)` is
the noise adanet_jax's gates draw from `key`). Blocks listed as fixed
always run (z = prob = 1, logits (0, inf)), as adanet_jax's fixed blocks.
`net.double()` gives the float64 twin.
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from adanet_jax.model import factory, gate, resnet

GATE_MODES = ('sample', 'deterministic', 'expected')


def _gate_forward(block, x, gate_mode, noise):
  """The block's gate: pool -> fc1 (1x1 conv) -> fc1bn -> ReLU -> fc2 -> two logits.

  Returns (z, prob, logits) of shapes (B,), (B,), (B, 2).
  """
  pooled = x.mean(dim=(2, 3), keepdim=True)
  h = F.relu(block.fc1bn(block.fc1(pooled).flatten(1)))
  logits = block.fc2(h[:, :, None, None]).flatten(1)
  prob = torch.sigmoid(logits[:, 1] - logits[:, 0])
  if gate_mode == 'expected':
    return prob, prob, logits
  perturbed = logits if gate_mode == 'deterministic' else logits + noise
  soft = torch.softmax(perturbed, dim=1)[:, 1]
  hard = (perturbed[:, 1] > perturbed[:, 0]).to(soft.dtype)
  return soft + (hard - soft).detach(), prob, logits


class _Block(nn.Module):
  """Shared gate handling. The gate's layers live in the block itself, as in
  the reference (`layer1.0.fc1.weight`)."""

  def _add_gate(self, channels, gated, hidden):
    self.gated = gated
    if gated:
      self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
      self.fc1bn = nn.BatchNorm1d(hidden)
      self.fc2 = nn.Conv2d(hidden, 2, 1, bias=True)
      nn.init.normal_(self.fc2.weight, 0.0, 1e-3)
      with torch.no_grad():
        self.fc2.bias.copy_(torch.tensor([0.1, 2.0]))

  def _gate(self, x, gate_mode, noise, fixed):
    if fixed or not self.gated:
      ones = x.new_ones(x.shape[0])
      always = torch.stack(
          [x.new_zeros(x.shape[0]), x.new_full((x.shape[0],), float('inf'))], 1
      )
      return ones, ones, always
    return _gate_forward(self, x, gate_mode, noise)


def _bn(channels):
  return nn.BatchNorm2d(channels)


class BasicBlock(_Block):
  """relu(shortcut(x) + z * bn2(conv2(relu(bn1(conv1(x))))))."""

  def __init__(self, cin, width, stride, gated, hidden):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = _bn(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = _bn(width)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != width:
      self.shortcut = nn.Sequential(
          nn.Conv2d(cin, width, 1, stride, bias=False), _bn(width)
      )
    self._add_gate(cin, gated, hidden)
    self.out_channels = width

  def forward(self, x, gate_mode, noise, fixed):
    z, prob, logits = self._gate(x, gate_mode, noise, fixed)
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(self.shortcut(x) + y * z[:, None, None, None]), (
        z,
        prob,
        logits,
    )


class Bottleneck(_Block):
  """1x1, 3x3 (with the stride), 1x1 to 4x width; post-activation."""

  def __init__(self, cin, width, stride, gated, hidden):
    super().__init__()
    out = 4 * width
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = _bn(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = _bn(width)
    self.conv3 = nn.Conv2d(width, out, 1, bias=False)
    self.bn3 = _bn(out)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != out:
      self.shortcut = nn.Sequential(
          nn.Conv2d(cin, out, 1, stride, bias=False), _bn(out)
      )
    self._add_gate(cin, gated, hidden)
    self.out_channels = out

  def forward(self, x, gate_mode, noise, fixed):
    z, prob, logits = self._gate(x, gate_mode, noise, fixed)
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(self.shortcut(x) + y * z[:, None, None, None]), (
        z,
        prob,
        logits,
    )


class PreActBlock(_Block):
  """Wide-ResNet block: shortcut + z * conv2(relu(bn2(conv1(relu(bn1(x))))))."""

  def __init__(self, cin, width, stride, gated, hidden):
    super().__init__()
    self.bn1 = _bn(cin)
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn2 = _bn(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.shortcut = None
    if stride != 1 or cin != width:
      self.shortcut = nn.Sequential(
          nn.Conv2d(cin, width, 1, stride, bias=False)
      )
    self._add_gate(cin, gated, hidden)
    self.out_channels = width

  def forward(self, x, gate_mode, noise, fixed):
    z, prob, logits = self._gate(x, gate_mode, noise, fixed)
    pre = F.relu(self.bn1(x))
    y = self.conv2(F.relu(self.bn2(self.conv1(pre))))
    shortcut = x if self.shortcut is None else self.shortcut(pre)
    return shortcut + y * z[:, None, None, None], (z, prob, logits)


class ResNet(nn.Module):
  """A gated ResNet with the reference key layout.

  Args:
    block: 'basic', 'bottleneck' or 'preact'.
    stage_sizes, stage_widths: blocks and block widths per stage.
    stem: 'cifar', 'imagenet' or 'wrn' (as `adanet_jax.model.resnet.ResNet`).
    stem_width: channels of the stem conv.
    num_classes: classes of the head.
    in_channels: image channels.
    gated: gates on every block, or none.
    fixed_blocks: blocks that always run.
    hidden: gate hidden width.
  """

  def __init__(
      self,
      block,
      stage_sizes,
      stage_widths,
      stem,
      stem_width,
      num_classes,
      in_channels=3,
      gated=True,
      fixed_blocks=(),
      hidden=16,
  ):
    super().__init__()
    self.stem = stem
    self.fixed_blocks = frozenset(fixed_blocks)
    if stem == 'imagenet':
      self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False)
    else:
      self.conv1 = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False)
    if stem != 'wrn':
      self.bn1 = _bn(stem_width)
    block_class = {
        'basic': BasicBlock,
        'bottleneck': Bottleneck,
        'preact': PreActBlock,
    }[block]
    cin = stem_width
    for s, (size, width) in enumerate(zip(stage_sizes, stage_widths)):
      blocks = []
      for i in range(size):
        stride = 2 if (i == 0 and s > 0) else 1
        blocks.append(block_class(cin, width, stride, gated, hidden))
        cin = blocks[-1].out_channels
      setattr(self, f'layer{s + 1}', nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    if stem == 'wrn':
      self.bn_final = _bn(cin)
    self.linear = nn.Linear(cin, num_classes)

  def blocks(self):
    for s in range(self.num_stages):
      yield from getattr(self, f'layer{s + 1}')

  def forward(self, x, gate_mode='sample', noise=None):
    """Returns (logits, aux) with aux['gates'], aux['probs'] (B, blocks), aux['logits']."""
    if gate_mode not in GATE_MODES:
      raise ValueError(
          f'gate mode {gate_mode!r} is unknown; allowed: {", ".join(GATE_MODES)}'
      )
    x = self.conv1(x)
    if self.stem != 'wrn':
      x = F.relu(self.bn1(x))
    if self.stem == 'imagenet':
      x = F.max_pool2d(x, 3, 2, 1)
    blocks = list(self.blocks())
    if gate_mode == 'sample' and noise is None:
      u = torch.rand(x.shape[0], len(blocks), 2, dtype=x.dtype, device=x.device)
      noise = -torch.log(-torch.log(u))
    if noise is not None:
      noise = torch.as_tensor(noise).to(x.dtype)
    outs = []
    for index, block in enumerate(blocks):
      block_noise = None if noise is None else noise[:, index]
      x, out = block(x, gate_mode, block_noise, index in self.fixed_blocks)
      outs.append(out)
    if self.stem == 'wrn':
      x = F.relu(self.bn_final(x))
    logits = self.linear(x.mean(dim=(2, 3)))
    zs, probs, gate_logits = zip(*outs)
    return logits, {
        'gates': torch.stack(zs, 1),
        'probs': torch.stack(probs, 1),
        'logits': torch.stack(gate_logits, 1),
    }


def from_config(config) -> ResNet:
  """The twin of `adanet_jax.model.factory.create_model(config)` (float32, fresh init)."""
  factory.validate(config)
  m = config.model
  sizes = factory.stage_sizes(m)
  common = dict(
      num_classes=m.num_classes,
      in_channels=config.data.channels,
      gated=m.gated,
      fixed_blocks=factory.fixed_blocks(config),
      hidden=config.gates.hidden,
  )
  k = m.width
  if m.name == 'cifar_resnet':
    return ResNet(
        'basic', sizes, (16 * k, 32 * k, 64 * k), 'cifar', 16 * k, **common
    )
  if m.name == 'wide_resnet':
    return ResNet(
        'preact', sizes, (16 * k, 32 * k, 64 * k), 'wrn', 16, **common
    )
  return ResNet(
      'bottleneck',
      sizes,
      tuple(64 * k * 2**i for i in range(4)),
      'imagenet',
      64,
      **common,
  )


def relative_error(a, b) -> float:
  """max |a - b| / max |b|, in float64: the error measure of the parity checks."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def randomize_(net: ResNet, seed: int = 0) -> ResNet:
  """Random weights and BatchNorm statistics, in place, for parity checks.

  Convs He-normal, BatchNorm gamma U(0, 1), beta N(0, 0.1^2), running mean
  N(0, 0.1^2), running variance U(0.5, 1.5); the gates' last layer N(0, 1)
  with bias N(0, 0.5^2), so that decisions differ between images.
  """
  g = torch.Generator().manual_seed(seed)

  def normal(t, std, mean=0.0):
    t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * std + mean)

  def uniform(t, lo, hi):
    t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)

  with torch.no_grad():
    for name, module in net.named_modules():
      if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        uniform(module.weight, 0.0, 1.0)
        normal(module.bias, 0.1)
        normal(module.running_mean, 0.1)
        uniform(module.running_var, 0.5, 1.5)
      elif name.endswith('fc2'):
        normal(module.weight, 1.0)
        normal(module.bias, 0.5)
      elif isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
        normal(module.weight, (2.0 / fan_in) ** 0.5)
        if module.bias is not None:
          uniform(module.bias, -(fan_in**-0.5), fan_in**-0.5)
  return net


def reference_init_(net: ResNet, imagenet: bool, seed: int = 0) -> ResNet:
  """The reference model's fresh init (PyTorch 0.3.1), in place.

  BatchNorm gammas U(0, 1) (that PyTorch's default) on every BatchNorm of the
  CIFAR model, only on the gates' of the ImageNet model, whose other
  BatchNorms get 1 and whose convs (gate fc1 too) He fan-out normal; the
  CIFAR model keeps PyTorch's default conv init. The gates' fc2 keep
  N(0, 1e-3) and bias (0.1, 2.0).
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, module in net.named_modules():
      if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        gate_bn = name.endswith('fc1bn')
        if gate_bn or not imagenet:
          module.weight.copy_(torch.rand(module.weight.shape, generator=g))
        else:
          module.weight.fill_(1.0)
      elif (
          imagenet
          and isinstance(module, nn.Conv2d)
          and not name.endswith('fc2')
      ):
        fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
        module.weight.copy_(
            torch.randn(module.weight.shape, generator=g) * (2 / fan_out) ** 0.5
        )
  return net


def gumbel_noise(key, batch: int, num_blocks: int) -> np.ndarray:
  """The Gumbel noise adanet_jax's gates draw in mode 'sample' from the model's `key`.

  Block i's gate draws `gate.gumbel_noise(resnet.block_key(key, i), (batch, 2))`;
  passed as the twin's `noise`, it makes the twin decide on the very same noise
  as `model.apply(..., gate_mode='sample', key=key)`.

  Returns:
    (batch, num_blocks, 2) float32 numpy.
  """
  return np.stack(
      [
          np.asarray(gate.gumbel_noise(resnet.block_key(key, i), (batch, 2)))
          for i in range(num_blocks)
      ],
      axis=1,
  )


def twin_train_forward_backward(
    net: ResNet, images, labels, noise, targets, weight: float
):
  """One training forward and backward pass of the twin (no optimizer step).

  The loss is adanet_jax's with reduction 'mean': cross-entropy + weight x
  the mean over all blocks of (zbar - t)^2, blocks with target 1 left out of
  the sum. The twin must be in train mode; gradients accumulate in `.grad`
  and the BatchNorm running statistics are updated.

  Args:
    net: the twin, in its dtype.
    images: NHWC numpy; labels: (B,) ints; noise: (B, blocks, 2) numpy.
    targets: per-block targets; weight: the target-rate loss weight.

  Returns:
    (loss as a float, aux of numpy arrays).
  """
  dtype = next(net.parameters()).dtype
  logits, aux = net(
      torch.from_numpy(images.transpose(0, 3, 1, 2)).to(dtype),
      gate_mode='sample',
      noise=torch.from_numpy(noise).to(dtype),
  )
  t = torch.tensor(targets, dtype=dtype)
  rate = torch.where(t < 1, (aux['gates'].mean(0) - t) ** 2, 0).sum() / len(
      targets
  )
  loss = F.cross_entropy(logits, torch.from_numpy(labels)) + weight * rate
  loss.backward()
  return float(loss.detach()), {k: v.detach().numpy() for k, v in aux.items()}


def our_train_forward_backward(
    model, variables, images, labels, key, targets, weight: float
):
  """The same pass in adanet_jax, with the loss of `adanet_jax.train.losses` ('mean'),
  its gates drawing their noise from `key` (the twin's: `gumbel_noise(key, ...)`).

  Returns:
    (loss, aux, new batch_stats, gradients of the params), as numpy; jitted
    per call (the model is closed over).
  """
  import jax  # pylint: disable=import-outside-toplevel

  from adanet_jax.train import losses  # pylint: disable=import-outside-toplevel

  images = np.asarray(images, np.float32)

  @jax.jit
  def run(params, batch_stats):
    def loss_fn(params):
      (logits, aux), updates = model.apply(
          {'params': params, 'batch_stats': batch_stats},
          images,
          train=True,
          gate_mode='sample',
          key=key,
          mutable=['batch_stats'],
      )
      loss, _ = losses.total_loss(logits, labels, aux, targets, weight, 'mean')
      return loss, (aux, updates['batch_stats'])

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, (aux, batch_stats)), grads = run(
      variables['params'], variables['batch_stats']
  )
  return jax.tree.map(np.asarray, (loss, aux, batch_stats, grads))
