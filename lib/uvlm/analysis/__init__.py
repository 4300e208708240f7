"""The paper's attention analysis: how a trained decoder allocates attention across token segments; stage ``attention``."""
