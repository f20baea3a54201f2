"""Training: state and shardings, optimizer, the jitted step, checkpoints, metrics, the loop."""
