"""The unified decoder: layers, the attention op, token layout, KV cache, layer plans (HiMix, HMGen), FLOPs, sampling, and its transformers face."""
