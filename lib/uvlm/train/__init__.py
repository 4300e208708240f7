"""Training: one run of the grid at one seed (loop, config, batching, checkpoints, command line), the text prior and the per-preset hyper-parameter sweep."""
