"""uvlm: a small, complete testbed for token reduction in unified vision-language training."""
__version__ = "0.1.0"
