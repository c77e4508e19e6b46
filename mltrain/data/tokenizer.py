"""Tokenizers for language models: characters (the text's own alphabet, no extra package), or a
Hugging Face `tokenizers` tokenizer (the optional extra mltrain[text]): a byte-level BPE trained
on the training text, or any `tokenizer.json`. Whichever a run used is kept in the data state,
and so in every checkpoint: `sample`, `eval` and `predict` need nothing else.

Data-state keys: `vocabulary` (characters, in id order) or `tokenizer_json` (the JSON).

Texts of different lengths (an `hf` dataset's text column) become fixed-length rows of ids,
filled up with PADDING, which is no token of any vocabulary: a model masks it out (an attention
mask) and reads whatever pad id it was trained with there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import UserError

TEXT_PIP = 'pip install "mltrain[text]"'
TOKENIZER_FILE = "tokenizer.json"
PADDING = -1  # the id of a padding position in fixed-length sequences: no token


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise UserError(f"data.tokenizer: subword tokenizers need the `tokenizers` library; {TEXT_PIP}") from None
    return tokenizers


class CharTokenizer:
    """Each character its own token, ids in the order of `vocabulary`."""

    def __init__(self, vocabulary: str):
        self.vocabulary = vocabulary
        self._index = {char: i for i, char in enumerate(vocabulary)}

    @classmethod
    def of(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, text: str, what: str) -> list[int]:
        """Token ids; characters outside the vocabulary are a UserError naming them."""
        unknown = sorted(set(text) - self._index.keys())
        if unknown:
            shown = ", ".join(repr(char) for char in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
            raise UserError(f"{what} has {len(unknown)} character(s) not in the model's vocabulary: {shown}; "
                            f"the vocabulary is {self.vocabulary!r}")
        return [self._index[char] for char in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocabulary[token] for token in ids)

    def state(self) -> dict[str, str]:
        return {"vocabulary": self.vocabulary}


class SubwordTokenizer:
    """A Hugging Face `tokenizers` tokenizer, kept as its JSON."""

    def __init__(self, tokenizer_json: str, where: str = "the checkpoint's tokenizer"):
        self.json = tokenizer_json
        try:
            self._tokenizer = _tokenizers().Tokenizer.from_str(tokenizer_json)
        except Exception as error:  # the library's own parse errors
            raise UserError(f"{where}: not a tokenizer.json the tokenizers library reads ({str(error)[:160]})") \
                from None
        # A file's own settings would cut a corpus to its model's length, or pad with ids that are not PADDING.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    @property
    def vocab_size(self) -> int:
        return vocabulary_size(self.json, "the tokenizer")

    def encode(self, text: str, what: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once, encoded in parallel on every core by the library."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)

    def state(self) -> dict[str, str]:
        return {"tokenizer_json": self.json}


Tokenizer = CharTokenizer | SubwordTokenizer


def train_bpe(texts: Iterable[str], vocab_size: int) -> SubwordTokenizer:
    """A byte-level BPE (GPT-2's kind: every text encodes, nothing is unknown) of `vocab_size`
    tokens, learned from `texts`. The library's training is deterministic for the same texts."""
    tokenizers = _tokenizers()
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = tokenizers.decoders.ByteLevel()
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet):
        raise UserError(f"data.vocab_size {vocab_size}: a byte-level BPE needs at least its {len(alphabet)} byte "
                        "tokens; give 257 or more")
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    model.train_from_iterator(texts, trainer=trainer)
    return SubwordTokenizer(model.to_str())


def load_tokenizer_file(path: Path, key: str) -> SubwordTokenizer:
    """A tokenizer.json, or the one in a folder (a Hugging Face model's, beside its config.json)."""
    if path.is_dir():
        if not (path / TOKENIZER_FILE).is_file():
            raise UserError(f"{key} {path}: a folder with no {TOKENIZER_FILE} in it; give char, bpe, a tokenizer.json "
                            f"or a folder holding one (a Hugging Face model saved with its tokenizer)")
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"{key} {path}: no such file; give char, bpe, the path of a tokenizer.json or a folder "
                        "holding one")
    return SubwordTokenizer(path.read_text(encoding="utf-8"), f"{key} {path}")


def tokenizer_for_texts(name: str, vocab_size: int, train_texts: list[str], every_text: list[str]) -> Tokenizer:
    """What data.tokenizer names, for texts in memory: the characters of every text, a BPE learned
    from the training texts, or a tokenizer.json (or a folder holding one)."""
    if name == "char":
        return CharTokenizer.of("".join(every_text))
    if name == "bpe":
        return train_bpe(train_texts, vocab_size)
    return load_tokenizer_file(Path(name), "data.tokenizer")


def padded_ids(tokenizer: Tokenizer, texts: list[str], length: int, what: str) -> np.ndarray:
    """(N, length) int64 token ids of `texts`: each cut to `length` tokens, or filled up with
    PADDING, which is no token (models mask it out)."""
    encoded = tokenizer.encode_batch(texts) if isinstance(tokenizer, SubwordTokenizer) \
        else [tokenizer.encode(text, what) for text in texts]
    ids = np.full((len(texts), length), PADDING, dtype=np.int64)
    for row, tokens in enumerate(encoded):
        ids[row, :min(len(tokens), length)] = tokens[:length]
    return ids


def from_state(state: dict[str, Any]) -> Tokenizer | None:
    """The tokenizer a data state keeps, if any."""
    if state.get("tokenizer_json") is not None:
        return SubwordTokenizer(state["tokenizer_json"])
    if state.get("vocabulary") is not None:
        return CharTokenizer(state["vocabulary"])
    return None


def vocabulary_size(tokenizer_json: str, where: str) -> int:
    """Token ids a tokenizer.json (the Hugging Face tokenizers format) can give: its largest id + 1.
    Read from the JSON itself, so a token file's reader needs no library."""
    try:
        content = json.loads(tokenizer_json)
        vocab = content["model"]["vocab"]  # token -> id (BPE, WordPiece, WordLevel); [token, score] pairs (Unigram)
        ids = [*(vocab.values() if isinstance(vocab, dict) else range(len(vocab))),
               *(token["id"] for token in content.get("added_tokens") or [])]
        return max(int(i) for i in ids) + 1
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{where} is not a tokenizer.json with a model.vocab (the Hugging Face tokenizers format); "
                        "write it with `mltrain prepare-text` or tokenizer.save()") from None
