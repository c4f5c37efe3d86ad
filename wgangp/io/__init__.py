"""What a run reads and writes on disk: checkpoints, TensorBoard events, paths, plots."""
