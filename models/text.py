"""Tokenizer over the caption vocabulary of ``models.data`` and a small transformer text encoder.

The tokenizer lower-cases, splits on spaces and punctuation, maps words outside ``data.VOCAB`` to
``<unk>`` (never an error), and pads / truncates to ``max_length`` tokens. Every sequence starts with
``<bos>``, which is never masked, so the empty prompt ``""`` is a valid input: it is the *null prompt*
of classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598), learned by replacing ~10% of the
training captions with ``""``.

The encoder (token + position embeddings, pre-norm transformer layers, final LayerNorm) returns token
embeddings [B, T, D] and a boolean padding mask [B, T] (True = a real token); the U-Net's
cross-attention reads both. It is trained jointly with the U-Net.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from samplers.core.errors import InvalidType

from . import data

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIALS = (PAD, UNK, BOS)
_SPLIT = re.compile(r"[a-z0-9]+")


class Tokenizer:
    """Words → ids. ``ids, mask = tok(["a red circle", ...])``, both [B, max_length]."""

    def __init__(self, vocab: Sequence[str] | None = None, max_length: int = 24):
        words = list(vocab) if vocab is not None else list(data.VOCAB)
        self.vocab = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = int(max_length)
        self.pad_id, self.unk_id, self.bos_id = (self.index[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.vocab)

    @staticmethod
    def words(text: str) -> list[str]:
        """Lower case, split on anything that is not a letter or digit. ``text`` must be a string: another value
        (None, a number, bytes) is refused, not read as its ``str()`` ("None", "123", "b'x'")."""
        if not isinstance(text, str):
            raise InvalidType(f"a prompt must be a string, got {text!r} ({type(text).__name__}); pass the text itself"
                              + (f" (decode bytes first: {text.decode(errors='replace')!r})"
                                 if isinstance(text, bytes) else ""))
        return _SPLIT.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        """``<bos>`` + word ids (``<unk>`` for unknown words), truncated to ``max_length`` (no padding)."""
        ids = [self.bos_id] + [self.index.get(w, self.unk_id) for w in self.words(text)]
        return ids[: self.max_length]

    def __call__(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise InvalidType(f"texts must be a string or a list of strings, got {texts!r} ({type(texts).__name__})")
        for k, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidType(f"texts[{k}] is {t!r} ({type(t).__name__}), not a string: every prompt must be a "
                                  "string (an empty one, '', is the null prompt)")
        ids = torch.full((len(texts), self.max_length), self.pad_id, dtype=torch.long)
        for i, t in enumerate(texts):
            row = self.encode(t)
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, ids != self.pad_id


@dataclass
class TextEncoderConfig:
    vocab: tuple[str, ...] = tuple(data.VOCAB)
    max_length: int = 24  # the longest caption of the grammar has 17 words (+ <bos>)
    dim: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 2

    @classmethod
    def from_dict(cls, d, what: str = "U-Net config field 'text'") -> "TextEncoderConfig":
        """The config from its JSON form (``vocab`` a list), every field checked (``ConfigMismatchError``)."""
        from . import _checks as C

        if not isinstance(d, dict):
            raise C._bad("U-Net config", "text", d, "a JSON object with the text encoder's fields")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise C.ConfigMismatchError(f"{what} has unknown fields {unknown}; {C.FIX}")
        vocab = d.get("vocab", cls.vocab)
        if not isinstance(vocab, (list, tuple)) or not vocab or not all(isinstance(w, str) and w for w in vocab) \
                or len(set(vocab)) != len(vocab):
            raise C._bad(what, "vocab", vocab, "a non-empty list of distinct non-empty words")
        for f in ("max_length", "dim", "layers", "heads", "mlp_ratio"):
            C.check_int(d, f, what, minimum=1)
        dim, heads = d.get("dim", cls.dim), d.get("heads", cls.heads)
        if dim % heads:
            raise C._bad(what, "dim", dim, f"a multiple of heads ({heads})")
        return cls(**{**d, "vocab": tuple(vocab)})


class TextEncoder(nn.Module):
    """Small pre-norm transformer encoder: tokens → embeddings [B, T, dim] (+ the mask it used)."""

    def __init__(self, config: TextEncoderConfig | None = None):
        super().__init__()
        self.config = c = config or TextEncoderConfig()
        self.tokenizer = Tokenizer(c.vocab, c.max_length)
        self.token_embedding = nn.Embedding(len(self.tokenizer), c.dim)
        self.position_embedding = nn.Parameter(torch.randn(c.max_length, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            c.dim, c.heads, c.dim * c.mlp_ratio, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, texts: str | Sequence[str] | None = None, ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Either ``texts`` or pre-tokenised ``ids`` (+ ``mask``). Returns (embeddings [B, T, D], mask [B, T])."""
        if ids is None:
            if texts is None:
                raise InvalidType("TextEncoder takes texts (a string or a list of strings) or ids (token ids "
                                  "[B, T]); got neither")
            ids, mask = self.tokenizer(texts)
        elif mask is None:
            mask = ids != self.tokenizer.pad_id
        device = self.token_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        h = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        h = self.layers(h, src_key_padding_mask=~mask)
        return self.norm(h), mask
