"""Samples -> token sequences with a segment id per token, loss masks, batches.

Sequence layouts (see uvlm.tokens.segments):
    U: [<bos> system] [<boi> image <eoi>] [instruction] [answer <eos>]
    G: [<bos> system] [prompt <boi>]      [image <eoi>]

Splits are tokenised once into padded tensors (``TokenizedSplit``); training
then only slices tensors, so data loading never limits step time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uvlm.core.errors import MissingInputError, UVLMError
from uvlm.core.io import load_npz
from . import segments as S

PAD, BOS, EOS, BOI, EOI = 0, 1, 2, 3, 4
IGNORE = -100


@dataclass
class Vocab:
    """The one vocabulary: text ids first, then image codes."""
    n_text: int
    codebook_size: int

    @property
    def image_token_start(self) -> int:
        return self.n_text

    @property
    def size(self) -> int:
        return self.n_text + self.codebook_size


@dataclass
class TokenizedSplit:
    """A whole split as right-padded tensors, plus per-row metadata."""
    input_ids: torch.Tensor    # (N, L) long, PAD-padded
    labels: torch.Tensor       # (N, L) long, IGNORE where no loss
    segment_ids: torch.Tensor  # (N, L) long, -1 on padding
    lengths: torch.Tensor      # (N,)
    task: str
    records: list

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def head(self, n: int) -> "TokenizedSplit":
        """The first ``n`` rows (splits are i.i.d. draws, so a prefix is a random subset)."""
        return TokenizedSplit(self.input_ids[:n], self.labels[:n], self.segment_ids[:n], self.lengths[:n],
                              self.task, self.records[:n])

    def batch(self, index, static: bool = False) -> dict:
        """Rows ``index``, trimmed to the longest row (right padding is causal-safe); with
        ``static``, every batch keeps the split's full length, so a compiled model sees one
        sequence length per task (torch.compile's dynamic lengths crash its CPU backward)."""
        index = torch.as_tensor(index, dtype=torch.long)
        L = self.input_ids.shape[1] if static else int(self.lengths[index].max())
        return {
            "input_ids": self.input_ids[index, :L],
            "labels": self.labels[index, :L],
            "segment_ids": self.segment_ids[index, :L],
            "task": self.task,
        }


def _text_ids(tokenizer, text: str) -> list[int]:
    return _text_ids_many(tokenizer, [text])[text]


def _text_ids_many(tokenizer, texts) -> dict[str, list[int]]:
    """{text: ids} for many texts at once (the batch call runs in the tokenizer's Rust core)."""
    texts = list(dict.fromkeys(texts))
    if not texts:
        return {}
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    for text, ids in zip(texts, encoded):
        if unk is not None and unk in ids:
            raise UVLMError(f"text tokenizer does not cover the text {text!r}: it maps a word to <unk>")
    return dict(zip(texts, encoded))


def encode_u(sys_ids, image_ids, instr_ids, answer_ids):
    """Token ids and segment ids of one U sample (answer already includes nothing special)."""
    ids = [BOS, *sys_ids, BOI, *image_ids, EOI, *instr_ids, *answer_ids, EOS]
    seg = ([S.SYSTEM] * (1 + len(sys_ids)) + [S.IMAGE] * (2 + len(image_ids))
           + [S.INSTRUCTION] * len(instr_ids) + [S.OUTPUT] * (len(answer_ids) + 1))
    return ids, seg


def encode_g(sys_ids, prompt_ids, image_ids):
    """Token ids and segment ids of one G sample; output = image codes and <eoi>."""
    ids = [BOS, *sys_ids, *prompt_ids, BOI, *image_ids, EOI]
    seg = ([S.SYSTEM] * (1 + len(sys_ids)) + [S.INSTRUCTION] * (len(prompt_ids) + 1)
           + [S.OUTPUT] * (len(image_ids) + 1))
    return ids, seg


def g_prompt_ids(tokenizer, system_prompt: str, prompt: str) -> list[int]:
    """The conditioning prefix of a G sample, ending in <boi>: what generation starts from."""
    return [BOS, *_text_ids(tokenizer, system_prompt), *_text_ids(tokenizer, prompt), BOI]


def tokenize_split(task, records, codes, tokenizer, vocab: Vocab, system_prompt: str,
                   loss_on: str = "output") -> TokenizedSplit:
    """Tokenise a list of U or G records with their image codes (N, h, w)."""
    if task not in ("u", "g"):
        raise ValueError(f"task must be 'u' or 'g', got {task!r}")
    if len(records) != len(codes):
        raise UVLMError(f"{len(records)} records but {len(codes)} code grids: world and tokenizer outputs "
                        "are out of sync; re-run `dvc repro tokenizer`")
    if codes.size and int(codes.max()) >= vocab.codebook_size:
        raise UVLMError(f"image codes go up to {int(codes.max())} but the vocabulary holds "
                        f"{vocab.codebook_size} codes: the tokenizer does not match the model")
    # Every distinct text is encoded once, in one batch call: per-example calls took seconds.
    fields = ("instruction", "answer") if task == "u" else ("prompt",)
    known = _text_ids_many(tokenizer, [system_prompt, *{rec[f] for rec in records for f in fields}])
    text_ids = known.__getitem__

    sys_ids = text_ids(system_prompt)
    image_rows = (np.asarray(codes).reshape(len(codes), -1).astype(np.int64) + vocab.image_token_start).tolist()
    rows, segs = [], []
    for rec, image_ids in zip(records, image_rows):
        if task == "u":
            ids, seg = encode_u(sys_ids, image_ids, text_ids(rec["instruction"]), text_ids(rec["answer"]))
        else:
            ids, seg = encode_g(sys_ids, text_ids(rec["prompt"]), image_ids)
        rows.append(ids)
        segs.append(seg)
    return _pad(task, records, rows, segs, loss_on)


def _pad(task, records, rows, segs, loss_on) -> TokenizedSplit:
    n, L = len(rows), max(len(r) for r in rows)
    # Filled in numpy and converted once: a torch.tensor per row took seconds per split.
    input_ids = np.full((n, L), PAD, dtype=np.int64)
    segment_ids = np.full((n, L), -1, dtype=np.int64)
    for i, (ids, seg) in enumerate(zip(rows, segs)):
        input_ids[i, :len(ids)] = ids
        segment_ids[i, :len(seg)] = seg
    # Targets aligned with inputs (the model shifts): OUTPUT tokens, or every token but the first.
    if loss_on == "all":
        labels = np.where(segment_ids >= 0, input_ids, IGNORE)
        labels[:, 0] = IGNORE
    else:
        labels = np.where(segment_ids == S.OUTPUT, input_ids, IGNORE)
    lengths = torch.tensor([len(r) for r in rows])
    return TokenizedSplit(torch.from_numpy(input_ids), torch.from_numpy(labels), torch.from_numpy(segment_ids),
                          lengths, task, records)


# ----------------------------------------------------------------------------- on disk

def read_records(world_dir, split: str) -> list[dict]:
    from uvlm.core.io import read_jsonl
    return read_jsonl(Path(world_dir) / f"{split}.jsonl", stage="data")


# The entry of codes.npz that records what the codes were made from (not a split).
CODES_META = "_made_from"


def read_codes(tokenizer_dir, split: str) -> np.ndarray:
    path = Path(tokenizer_dir) / "codes.npz"
    codes = load_npz(path, stage="tokenizer", keys=(split,))
    if split not in codes or split == CODES_META:
        raise MissingInputError(f"{path}:{split}", "tokenizer")
    return codes[split]


def codes_made_from(tokenizer_dir) -> dict:
    """What codes.npz records of its making: {"world": fingerprint, "codebook_size": k, ...}, or {}
    for codes written without it (by hand, in tests)."""
    path = Path(tokenizer_dir) / "codes.npz"
    codes = load_npz(path, stage="tokenizer", keys=(CODES_META,))
    if CODES_META not in codes:
        return {}
    try:
        return json.loads(str(codes[CODES_META]))
    except json.JSONDecodeError as e:
        raise UVLMError(f"'{path}' has an unreadable '{CODES_META}' entry ({e}): re-run `dvc repro tokenizer`") from e


def check_codes_match(data_dir, codebook_size: int) -> None:
    """The tokenizer's codes were made from this world, with this codebook: checked where they are
    read, so codes of another world or tokenizer are named before anything trains on them."""
    from uvlm.world.build import load_world_info
    data_dir = Path(data_dir)
    codes_path, world_path = data_dir / "tokenizer" / "codes.npz", data_dir / "world" / "world.json"
    made = codes_made_from(data_dir / "tokenizer")
    # A world without world.json or a fingerprint was laid out by hand (tests): nothing to compare.
    world_print = load_world_info(data_dir / "world").get("fingerprint") if world_path.exists() else None
    if made.get("codebook_size") not in (None, codebook_size):
        raise UVLMError(f"'{codes_path}' holds codes of a {made['codebook_size']}-entry codebook but "
                        f"tokenizer.codebook_size={codebook_size}: re-run `dvc repro tokenizer` (or set "
                        f"tokenizer.codebook_size: {made['codebook_size']})")
    if world_print is not None and made.get("world") != world_print:
        raise UVLMError(f"'{codes_path}' was made from another world (fingerprint {made.get('world')!r}) than "
                        f"'{world_path}' (fingerprint {world_print!r}): the world was rebuilt (another seed or "
                        "world setting) after the tokenizer ran. Re-run `dvc repro tokenizer`.")


def load_text_tokenizer(world_dir):
    from uvlm.world.text_tokenizer import load_text_tokenizer as _load
    return _load(Path(world_dir) / "text_tokenizer")


def load_split(data_dir, task: str, split: str, tokenizer, vocab: Vocab, system_prompt: str,
               loss_on: str = "output") -> TokenizedSplit:
    """Tokenise ``<split>`` of data/world with its codes from data/tokenizer."""
    data_dir = Path(data_dir)
    records = read_records(data_dir / "world", split)
    codes = read_codes(data_dir / "tokenizer", split)
    return tokenize_split(task, records, codes, tokenizer, vocab, system_prompt, loss_on)
