"""Training: the trainer's cadence, state and resume, guards and artifacts."""
