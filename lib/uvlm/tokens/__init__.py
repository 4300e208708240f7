"""Images and text as token sequences: the VQ image tokenizer (stage ``tokenizer``), segment ids, and samples turned into sequences and batches."""
