"""Training: step, optimizer, losses, loop, evaluation, metrics, checkpoints, run directory."""
