"""The captioner's word vocabulary: captions <-> token ids, with padding, start, end and unknown tokens."""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(len(SPECIALS))


def words_of(caption: str) -> list[str]:
    """Lower-case words of a caption, punctuation dropped (COCO's captions end in periods, some hold commas)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", caption.lower())


class Vocabulary:
    """Word-level tokens: ids 0-3 are ``<pad> <bos> <eos> <unk>``, then ``words`` in the order given."""

    def __init__(self, words: Sequence[str]):
        words = [w for w in words if w not in SPECIALS]
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary's words must be distinct")
        self.tokens: tuple[str, ...] = SPECIALS + tuple(words)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def from_captions(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Every word said at least ``min_count`` times, the most frequent first (ties alphabetically)."""
        counts = Counter(w for c in captions for w in words_of(c))
        return cls([w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, caption: str, unknown: str = "unk") -> list[int]:
        """``<bos> words <eos>`` as ids; a word not in the vocabulary becomes ``<unk>`` (``unknown="unk"``) or is
        an error naming it (``"error"``)."""
        ids = [BOS]
        for word in words_of(caption):
            if word not in self.index and unknown == "error":
                raise KeyError(f"{word!r} is not in the captioner's vocabulary of {len(self)} tokens")
            ids.append(self.index.get(word, UNK))
        return ids + [EOS]

    def id(self, word: str) -> int:
        if word not in self.index:
            raise KeyError(f"{word!r} is not in the captioner's vocabulary of {len(self)} tokens")
        return self.index[word]

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` up to the first ``<eos>``, without ``<bos>`` and padding."""
        words = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} is outside the vocabulary (0..{len(self.tokens) - 1})")
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.tokens[i])
        return " ".join(words)
