"""Word-level text tokenizer over the scene world's closed vocabulary.

Built with HF ``tokenizers`` (WordLevel model, Whitespace pre-tokenizer) from
every word the world's generators can emit (``world_language.vocabulary_texts``),
not from a sample, so no generated string ever maps to ``<unk>``. Special tokens
have fixed ids shared by the whole project (CONTRACT.md)::

    <pad>=0 <bos>=1 <eos>=2 <boi>=3 <eoi>=4 <unk>=5

It is saved as a ``PreTrainedTokenizerFast``, so ``AutoTokenizer.from_pretrained`` loads it
offline too. It adds no special tokens by itself: sequence assembly
(``data.py``) places <bos>/<boi>/<eoi>/<eos> explicitly.
"""
from __future__ import annotations

from pathlib import Path

from uvlm.core.errors import MissingInputError
from .language import vocabulary_texts
from .scenes import WorldConfig

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, BOI_ID, EOI_ID, UNK_ID = range(6)


def _pre_tokenizer():
    from tokenizers.pre_tokenizers import Whitespace

    return Whitespace()


def world_words(world_cfg: WorldConfig) -> list[str]:
    """Sorted word list, split exactly as the tokenizer's pre-tokenizer splits text."""
    pre = _pre_tokenizer()
    words = {w for text in vocabulary_texts(world_cfg) for w, _ in pre.pre_tokenize_str(text)}
    return sorted(words - set(SPECIAL_TOKENS))


def build_text_tokenizer(world_cfg: WorldConfig):
    """-> ``PreTrainedTokenizerFast`` with fixed special ids, then the world's words."""
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in world_words(world_cfg):
        vocab[w] = len(vocab)
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = _pre_tokenizer()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>", additional_special_tokens=["<boi>", "<eoi>"],
        model_max_length=4096, padding_side="right")
    _check_ids(tok)
    return tok


def _check_ids(tok) -> None:
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special token ids drifted: {dict(zip(SPECIAL_TOKENS, ids))}")


def save_text_tokenizer(tok, directory) -> None:
    """Write an HF tokenizer directory (tokenizer.json + tokenizer_config.json)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(directory))


save = save_text_tokenizer


def load_text_tokenizer(directory):
    """Load the tokenizer saved by stage ``data``; names the stage if it is missing."""
    # The class itself, not AutoTokenizer: the auto classes' imports pull in transformers'
    # generation and distributed code (and scikit-learn where it is installed). Every train and
    # eval process and `results` load this tokenizer; in a fresh process on the gpu preset's H100
    # host that took 8.6-9.6 s against 1.6-2.3 s (records/bench/host-costs-nvidia-h100.txt).
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").exists():
        raise MissingInputError(directory, "data")
    tok = PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    _check_ids(tok)
    return tok


def encode_words(tok, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return tok(text, add_special_tokens=False)["input_ids"]
