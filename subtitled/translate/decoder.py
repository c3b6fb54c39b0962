"""Greedy decoding over one KV cache: reuse what it holds, feed the rest, decode.

One update feeds, in as few calls as the sliding windows allow, the prompt tokens the
cache lacks, the forced (stable) target, and a draft (the previous hypothesis' tail).
The draft is checked against the logits of that same call and kept while it matches the
greedy choice, so most of a hypothesis costs no decode step at all; the result is
exactly the greedy output (the draft is only accepted where greedy agrees with it).
Decoding then goes on one token per call until a stop token, the length limit, or the
repetition guard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from subtitled.translate.kvcache import KvCache
from subtitled.translate.policy import DecodePolicy
from subtitled.translate.runtime import OnnxModel


@dataclass(frozen=True)
class DecodeResult:
    """One hypothesis (forced prefix included, stop token excluded) and what it cost."""

    tokens: tuple[int, ...]
    stopped: bool
    """Ended on a stop token (not the length limit or the repetition guard)."""
    prefilled: int
    """Tokens fed to the model by this update's prefill calls (prompt, forced prefix,
    draft), re-prefills after a rollback included; not the single-token decode steps."""
    decode_steps: int
    calls: int
    compute_s: float


class GreedyDecoder(Protocol):
    """What a `LanguageStream` asks of its decoder (`Decoder` here; the benchmark puts
    llama.cpp in its place)."""

    def decode(
        self, prompt: Sequence[int], forced: Sequence[int], limit: int, draft: Sequence[int] = ()
    ) -> DecodeResult: ...

    def reset(self) -> None: ...


class Decoder:
    """Greedy decoding over one conversation's cache.

    Without `reuse` the whole prompt is fed again on every update (the baseline of
    SimulStreaming-style re-prefilling); the output is identical.
    """

    def __init__(self, model: OnnxModel, policy: DecodePolicy, reuse: bool = True) -> None:
        self.model = model
        self.policy = policy
        self.reuse = reuse
        self.cache: KvCache = model.new_cache()
        windows = [kv.window for kv in model.layout if kv.window is not None]
        self.chunk_tokens = min(windows) if windows else 1 << 30
        """Feed at most this many tokens per call, so a just-fed draft can be rolled back
        in every sliding layer (see `cache.CacheLedger`)."""

    def reset(self) -> None:
        self.cache.reset()

    def _feed(self, ids: Sequence[int], rows: int = 1) -> np.ndarray:
        """Feed `ids` in chunks; the logits of the last `rows` of them, (rows, vocab)."""
        first = len(ids) - rows  # the first position whose logits are wanted
        kept = []
        for i in range(0, len(ids), self.chunk_tokens):
            end = min(i + self.chunk_tokens, len(ids))
            logits = self.cache.forward(ids[i:end], end - max(i, first))
            if end > first:
                kept.append(logits)
        return kept[0] if len(kept) == 1 else np.concatenate(kept, axis=0)

    def _truncate(self, keep: int, known: Sequence[int]) -> None:
        """Roll the cache back to `keep` tokens; if a sliding layer cannot, rebuild it
        from `known` (the ids it held)."""
        if self.cache.ledger.can_keep(keep):
            self.cache.rollback(keep)
        else:
            self.cache.reset()
            self._feed(known[:keep])

    def decode(
        self,
        prompt: Sequence[int],
        forced: Sequence[int],
        limit: int,
        draft: Sequence[int] = (),
    ) -> DecodeResult:
        """Greedy continuation of `prompt + forced`, at most `limit` tokens in all."""
        started = time.perf_counter()
        fed_before, calls_before = self.cache.prefilled_tokens, self.cache.calls
        steps = 0
        stop = self.model.stop_ids
        head = tuple(prompt) + tuple(forced)
        draft = tuple(draft)[: max(limit - len(forced), 0)]
        ledger = self.cache.ledger
        plan = ledger.plan(head + draft, reuse=self.reuse)
        if not ledger.can_keep(min(plan.keep, len(head) - 1)):
            plan = ledger.plan(head, reuse=False)
        # The logits at the end of `head` start the decoding: feed from there at least.
        keep = min(plan.keep, len(head) - 1)
        self._truncate(keep, ())
        # logits from the end of `head` on: its next token, then each draft token's
        logits = self._feed((head + draft)[keep:], len(draft) + 1)
        row = 0
        tokens = list(forced)
        next_id = int(np.argmax(logits[row]))
        matched = 0  # generated tokens that equal the draft, already in the cache
        stopped = False
        while len(tokens) < limit:
            if next_id in stop:
                stopped = True
                break
            tokens.append(next_id)
            if self.policy.cut_runaway(tokens, len(forced)):
                break
            if len(tokens) >= limit:
                break
            if 0 <= matched < len(draft) and draft[matched] == next_id:
                matched += 1
                row += 1
                next_id = int(np.argmax(logits[row]))
                continue
            if matched >= 0:  # the draft diverged: drop its rest from the cache
                self._truncate(len(head) + matched, head + draft)
                matched = -1
            next_id = int(np.argmax(self.cache.forward([next_id])[-1]))
            steps += 1
        return DecodeResult(
            tokens=tuple(tokens),
            stopped=stopped,
            prefilled=self.cache.prefilled_tokens - fed_before - steps,
            decode_steps=steps,
            calls=self.cache.calls - calls_before,
            compute_s=time.perf_counter() - started,
        )
