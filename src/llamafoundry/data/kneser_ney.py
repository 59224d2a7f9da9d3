"""An n-gram language model with interpolated modified Kneser-Ney smoothing (Chen & Goodman 1998), as
KenLM's estimator `lmplz` computes it (Heafield et al. 2013), written in KenLM's ARPA format: CCNet's
reference model for the perplexity filter (Sec. 2.1), without KenLM's C++ tools.

What lmplz does, and so this:
- every sentence is `<s> words </s>`; highest-order n-grams and n-grams that start with `<s>` keep their
  counts, every other n-gram counts the distinct words seen before it (adjusted counts);
- per order, discounts D1, D2, D3+ from the counts of adjusted counts 1-4 (Chen & Goodman, eq. 26);
- p(w | h) = (a(hw) - D(a(hw))) / sum_x a(hx) + gamma(h) p(w | h minus its first word), with unigrams
  interpolated with the uniform distribution over the vocabulary (`<unk>` included, `<s>` not);
- the ARPA backoff of a context h is gamma(h), so a backoff reader gives the interpolated model.

Counting is in memory with numpy (an n-gram of order n is numbered by its (n-1)-gram prefix's number
and its last word): seconds for a dump sample or a small wiki, a few bytes per token per order.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llamafoundry.errors import UserError

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2
# KenLM's (and SRILM's) log10 probability for <s>, which is context and never predicted.
BOS_LOG10_PROB = -99.0


@dataclass
class Order:
    """The n-grams of one order: each as its (n-1)-gram prefix's index in the order below and its last
    word, with its probability and (below the top order) its backoff, in log10."""

    prefix: np.ndarray
    last: np.ndarray
    log10_prob: np.ndarray
    log10_backoff: np.ndarray | None


@dataclass
class NGramModel:
    """An estimated model: `vocab[i]` is word i; `orders[n - 1]` holds the n-grams;
    `discounts[n - 1]` is (D1, D2, D3+) of order n."""

    vocab: list[str]
    orders: list[Order]
    discounts: list[tuple[float, float, float]]

    def write_arpa(self, path: str | Path, progress: bool = False) -> None:
        """The model in ARPA format: `\\data\\`, the n-gram counts, then one `\\n-grams:` section per
        order of `log10 p <tab> words [<tab> log10 backoff]` lines (no backoff where it is 0)."""
        total = sum(len(o.last) for o in self.orders)
        bar = tqdm(total=total, desc="writing ARPA", unit="n-gram", disable=not progress)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\\data\\\n")
            f.writelines(f"ngram {n}={len(o.last)}\n" for n, o in enumerate(self.orders, 1))
            texts: list[str] = []
            for n, order in enumerate(self.orders, 1):
                texts = self._texts(order, texts)
                f.write(f"\n\\{n}-grams:\n")
                backoffs = order.log10_backoff if order.log10_backoff is not None else [0.0] * len(texts)
                for text, logp, bo in zip(texts, order.log10_prob.tolist(), backoffs, strict=True):
                    f.write(f"{logp:.7g}\t{text}\t{bo:.7g}\n" if bo else f"{logp:.7g}\t{text}\n")
                bar.update(len(texts))
            f.write("\n\\end\\\n")
        bar.close()

    def _texts(self, order: Order, below: list[str]) -> list[str]:
        """The n-grams of `order` as space-separated words, from the (n-1)-grams' texts `below`."""
        words = [self.vocab[w] for w in order.last.tolist()]
        if not below:
            return words
        return [f"{below[p]} {w}" for p, w in zip(order.prefix.tolist(), words, strict=True)]


def estimate(sentences: Iterable[Sequence[str]], order: int = 5) -> NGramModel:
    """Interpolated modified Kneser-Ney estimates of every n-gram up to `order` in `sentences` (each a
    sequence of words without whitespace, `<s>` and `</s>` not included), as lmplz makes them (see the
    module docstring)."""
    if order < 2:
        raise UserError(
            f"the n-gram order must be at least 2 (KenLM reads bigram models and up), got {order}"
        )
    vocab, tokens = _index(sentences)
    if len(tokens) == 0:
        raise UserError("no text to estimate an n-gram model from")
    counted = _count(tokens, len(vocab), order)
    adjusted = _adjusted_counts(counted, order)
    discounts = [_discounts(a, n) for n, a in enumerate(adjusted, 1)]
    orders: list[Order] = []
    lower_prob = np.full(1, 1.0 / (len(vocab) - 1))  # uniform over the vocabulary, <s> left out
    for n, (gram, a, d) in enumerate(zip(counted, adjusted, discounts, strict=True), 1):
        contexts = len(counted[n - 2].last) if n > 1 else 1
        prefix = gram.prefix if n > 1 else np.zeros(len(a), dtype=np.int64)
        prob, gamma = _interpolate(a, prefix, contexts, d, lower_prob[gram.suffix] if n > 1 else lower_prob)
        if n > 1:  # gamma(h) is the backoff of h, an (n-1)-gram
            orders[-1].log10_backoff = np.log10(np.where(gamma > 0, gamma, 1.0))
        log10_prob = np.log10(prob)
        if n == 1:
            log10_prob[gram.last == _BOS_ID] = BOS_LOG10_PROB
        orders.append(Order(gram.prefix, gram.last, log10_prob, None))
        lower_prob = prob
    return NGramModel(vocab, orders, discounts)


def _index(sentences: Iterable[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """The vocabulary (`<unk>`, `<s>`, `</s>` first) and every sentence as `<s> ids </s>`, concatenated."""
    ids = {UNK: _UNK_ID, BOS: _BOS_ID, EOS: _EOS_ID}
    tokens = array("q")  # 8 bytes a token, where a list of ints takes 36
    for sentence in sentences:
        if not sentence:
            continue
        tokens.append(_BOS_ID)
        tokens.extend(ids.setdefault(w, len(ids)) for w in sentence)
        tokens.append(_EOS_ID)
    return list(ids), np.frombuffer(tokens, dtype=np.int64)


@dataclass
class _Counted:
    """The distinct n-grams of one order, in order of (prefix, last word)."""

    prefix: np.ndarray  # index of the (n-1)-gram prefix among the order below (unigrams: unused)
    last: np.ndarray  # last word id
    suffix: np.ndarray  # index of the (n-1)-gram without the first word (unigrams: unused)
    first: np.ndarray  # first word id
    count: np.ndarray  # occurrences


def _count(tokens: np.ndarray, vocab_size: int, order: int) -> list[_Counted]:
    """Every n-gram up to `order` inside a sentence of `tokens`, with its count."""
    ends = np.flatnonzero(tokens == _EOS_ID)
    room = ends[np.searchsorted(ends, np.arange(len(tokens)))] - np.arange(len(tokens))  # words after
    unigram = np.arange(vocab_size)
    out = [_Counted(unigram, unigram, unigram, unigram, np.bincount(tokens, minlength=vocab_size))]
    at = tokens  # the index of the (n-1)-gram that starts at each position (-1: none fits)
    for n in range(2, order + 1):
        starts = np.flatnonzero(room >= n - 1)
        keys = at[starts] * vocab_size + tokens[starts + n - 1]
        unique, first, inverse, count = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        where = starts[first]
        out.append(_Counted(unique // vocab_size, unique % vocab_size, at[where + 1], tokens[where], count))
        at = np.full(len(tokens), -1, dtype=np.int64)
        at[starts] = inverse
    return out


def _adjusted_counts(counted: list[_Counted], order: int) -> list[np.ndarray]:
    """lmplz's adjusted counts: the count for the top order and for n-grams that start with <s>; below
    the top order, the number of distinct words seen before the n-gram. <s> and <unk> as unigrams: 0."""
    adjusted = []
    for n in range(1, order + 1):
        gram = counted[n - 1]
        if n == order:
            adjusted.append(gram.count)
            continue
        left = np.bincount(counted[n].suffix, minlength=len(gram.count))
        adjusted.append(np.where(gram.first == _BOS_ID, gram.count, left))
    adjusted[0] = adjusted[0].copy()
    adjusted[0][[_UNK_ID, _BOS_ID]] = 0
    return adjusted


def _discounts(adjusted: np.ndarray, n: int) -> tuple[float, float, float]:
    """D1, D2, D3+ of one order from the counts of its adjusted counts (Chen & Goodman, eq. 26)."""
    t = np.bincount(adjusted[adjusted <= 4], minlength=5).astype(float)
    for k in (1, 2, 3):
        if t[k] == 0:
            raise UserError(
                f"too little text for Kneser-Ney discounts: no {n}-gram has adjusted count {k}; "
                "give more text or a lower order"
            )
    y = t[1] / (t[1] + 2 * t[2])
    d = tuple(float(k - (k + 1) * y * t[k + 1] / t[k]) for k in (1, 2, 3))
    for k, dk in enumerate(d, 1):
        if not 0 <= dk <= k:
            raise UserError(
                f"too little text for Kneser-Ney discounts: the {n}-gram discount for count {k} is "
                f"{dk:.3f}, outside [0, {k}]; give more text or a lower order"
            )
    return d


def _interpolate(
    adjusted: np.ndarray,
    prefix: np.ndarray,
    contexts: int,
    discounts: tuple[float, float, float],
    lower: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated probabilities of one order's n-grams, given each one's lower-order probability
    `lower`, and gamma of every context (0 where it has no n-gram after it)."""
    discount = np.array([0.0, *discounts])[np.minimum(adjusted, 3)]
    total = np.bincount(prefix, weights=adjusted, minlength=contexts)
    mass = np.bincount(prefix, weights=discount, minlength=contexts)
    gamma = np.divide(mass, total, out=np.zeros(contexts), where=total > 0)
    prob = (adjusted - discount) / total[prefix] + gamma[prefix] * lower
    return prob, gamma
