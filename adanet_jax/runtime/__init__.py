"""Process start-up for entry points: CLI, distributed start-up, console, JAX settings."""
