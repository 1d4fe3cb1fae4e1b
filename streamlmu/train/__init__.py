"""Training: loop, checkpoints, distributed data parallel."""
