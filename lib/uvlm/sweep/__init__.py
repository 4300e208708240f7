"""The synergy sweep: where does the unified model gain over its single-task baselines, over model size and data size."""
