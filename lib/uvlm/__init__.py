"""uvlm: a small, complete testbed for token reduction in unified vision-language training."""
__version__ = "0.1.0"

# AutoConfig / AutoModelForCausalLM load a saved UVLM (model_type "uvlm"). Only an import hook
# here: the Auto classes register when transformers loads them (see hf_auto.py for why).
from uvlm.model import hf_auto as _hf_auto

_hf_auto.install()
