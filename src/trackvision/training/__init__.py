"""Training: the epoch loop (tracker-agnostic) and checkpoints."""
