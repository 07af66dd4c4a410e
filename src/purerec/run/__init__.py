"""Running things: the training program (``loop.make_train``), the run directory (experiment),
evaluation, sweeps, tuning and several processes."""
