"""Training engine: schedules, checkpoints, logs, the trainer, feature extraction."""
