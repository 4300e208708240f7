"""The scene world: procedural scenes, their language (captions, prompts, Q&A), the benchmark analogues and the word-level text tokenizer; stage ``data``."""
