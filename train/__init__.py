"""Training: data loading, model building, the training loop, evaluation and reports (needs torch)."""
