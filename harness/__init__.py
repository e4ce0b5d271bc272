"""The glue: CLI, trainer, result records and leaderboards. The only package that knows Hydra, wandb and files."""
