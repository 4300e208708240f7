"""The word-level tokenizer: fixed special ids, exact coverage, loadable with AutoTokenizer."""
import pytest

from uvlm.core.errors import MissingInputError
from uvlm.core.schema import build
from uvlm.world.build import ALL_SPLITS, make_splits, split_texts
from uvlm.world.scenes import PALETTE, SHAPES, SIZE_FRACTIONS, WorldConfig
from uvlm.world.text_tokenizer import (SPECIAL_TOKENS, UNK_ID, build_text_tokenizer, encode_words,
                                 load_text_tokenizer, save_text_tokenizer)

SMALL = dict(n_u_train=300, n_g_train=300, n_val=10, n_test=100, n_bench=60)
CONFIGS = [
    SMALL,
    dict(SMALL, grid=4, max_objects=6, image_size=32, shapes=list(SHAPES), colours=list(PALETTE),
         sizes=list(SIZE_FRACTIONS)),
    dict(SMALL, grid=2, image_size=16, max_objects=4),
    dict(SMALL, grid=1, max_objects=1, image_size=16, transfer_split=False),
]


@pytest.mark.parametrize("override", CONFIGS)
def test_no_unknown_words_in_any_generated_text(override):
    cfg = build(WorldConfig, override, prefix="world")
    tok = build_text_tokenizer(cfg)
    _, splits = make_splits(cfg, seed=0)
    texts = [cfg.system_prompt] + [t for n in ALL_SPLITS for t in split_texts(n, splits[n])]
    assert len(texts) > 1000
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    bad = [t for t, row in zip(texts, ids) if UNK_ID in row]
    assert not bad, bad[:3]
    # Word level and exact: one id per whitespace-separated word, and decode inverts encode.
    for t, row in zip(texts[:200], ids):
        assert len(row) == len(t.split()) and tok.decode(row) == t


def test_special_ids_fixed_and_autotokenizer_loads_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = build_text_tokenizer(WorldConfig())
    save_text_tokenizer(tok, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert loaded.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4, 5]
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) \
        == (0, 1, 2, 5)
    assert len(loaded) == len(tok)
    text = "is there a red circle ?"
    assert encode_words(loaded, text) == encode_words(tok, text)
    assert UNK_ID not in encode_words(loaded, text)
    assert encode_words(loaded, "is there a purple hexagon ?").count(UNK_ID) == 2
    # No special tokens are added implicitly: sequence assembly places them.
    assert loaded(text)["input_ids"] == encode_words(loaded, text)
    again = load_text_tokenizer(tmp_path / "tok")
    assert again.get_vocab() == tok.get_vocab()


def test_vocabulary_follows_config():
    small = build_text_tokenizer(WorldConfig())
    big = build_text_tokenizer(WorldConfig(shapes=list(SHAPES), colours=list(PALETTE)))
    assert "ring" not in small.get_vocab() and "ring" in big.get_vocab()
    assert "rings" in big.get_vocab() and "orange" in big.get_vocab()
    assert all(v >= len(SPECIAL_TOKENS) for k, v in small.get_vocab().items()
               if k not in SPECIAL_TOKENS)


def test_missing_tokenizer_names_stage(tmp_path):
    with pytest.raises(MissingInputError) as e:
        load_text_tokenizer(tmp_path / "nothing")
    assert e.value.stage == "data"


def test_loading_does_not_import_the_auto_classes(tmp_path):
    # Every train and eval process loads the tokenizer; the auto classes' imports cost seconds.
    import subprocess
    import sys

    save_text_tokenizer(build_text_tokenizer(WorldConfig()), tmp_path / "tok")
    code = ("import sys; from uvlm.world.text_tokenizer import load_text_tokenizer; "
            f"tok = load_text_tokenizer({str(tmp_path / 'tok')!r}); "
            "print(len(tok), 'transformers.models.auto.auto_factory' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 6 and out[1] == "False"
