"""Training: typed options, the decode-once data cache, augmentation, the epoch loop, validation and the
decision threshold, calibration, evaluation and reports (needs torch)."""
