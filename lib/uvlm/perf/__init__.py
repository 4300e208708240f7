"""Wall-clock measurements: the layer plans' training-step benchmark and the timing of one train stage."""
