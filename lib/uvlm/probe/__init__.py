"""The attribute probe: a small CNN that reads a rendered scene back into its scene graph, and the scores it gives images; stage ``probe``."""
