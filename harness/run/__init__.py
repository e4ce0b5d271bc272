"""Running: the `archbench` CLI, validation, model building, the trainer, checkpoints, the search adapter and the
loggers. Writes result records (harness/record/); imports nothing of harness/report/."""
