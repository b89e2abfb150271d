"""Training and evaluation: config and recipes, loss, metrics, the engine, checkpoints."""
