"""Command-line tools other than training: `python -m adanet_jax.tools.<name>`."""
