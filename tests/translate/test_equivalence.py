"""Incremental decoding with cache reuse gives, token for token, the greedy output of
recomputing everything from scratch, over a scripted sequence of ASR updates with
revisions, sentence ends, a context-budget eviction and rollbacks past a sliding window."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from subtitled.translate.decoder import DecodeResult
from subtitled.translate.policy import DecodePolicy
from subtitled.translate.runtime import OnnxModel, RuntimeConfig
from subtitled.translate.stream import LanguageStream

# (segment id, source so far, final): words committed one by one, ASR revisions of the
# open sentence ("book" -> "books", a dropped word), and sentence ends.
SCRIPT: list[tuple[int, str, bool]] = []
for sid, sentence in enumerate([
    "Printing in the only sense with which we are at present concerned",
    "differs from most if not from all the arts and crafts",
    "produced the block books which were the immediate predecessors of the true printed book",
    "the invention of movable metal letters in the middle of the fifteenth century",
]):
    words = sentence.split()
    for n in range(1, len(words) + 1):
        SCRIPT.append((sid, " ".join(words[:n]), n == len(words)))
        if n == 5:  # a revision of the last words, then back
            SCRIPT.append((sid, " ".join([*words[:3], "revised"]), False))
        if n == 7:
            SCRIPT.append((sid, " ".join([*words[:n - 1], words[n - 1] + "s"]), False))


class ScratchDecoder:
    """Greedy decoding without any cache: the whole sequence is run for every token."""

    def __init__(self, model: OnnxModel, policy: DecodePolicy) -> None:
        self.model, self.policy = model, policy

    def reset(self) -> None:
        pass

    def decode(self, prompt: Sequence[int], forced: Sequence[int], limit: int,
               draft: Sequence[int] = ()) -> DecodeResult:
        tokens, stopped, fed = list(forced), False, 0
        while len(tokens) < limit:
            sequence = list(prompt) + tokens
            cache = self.model.new_cache()
            next_id = int(np.argmax(cache.forward(sequence)[-1]))
            fed += len(sequence)
            if next_id in self.model.stop_ids:
                stopped = True
                break
            tokens.append(next_id)
            if self.policy.cut_runaway(tokens, len(forced)):
                break
        return DecodeResult(tuple(tokens), stopped, fed, 0, 0, 0.0)


def _run(stream: LanguageStream) -> list[tuple[str, str, int]]:
    return [
        (r.stable, r.unstable, r.total_tokens)
        for r in (stream.update(sid, text, final) for sid, text, final in SCRIPT)
    ]


@pytest.mark.parametrize("kv_cache", ["shared", "append"])
@pytest.mark.parametrize("reserve", [256, 4], ids=["rollback-in-place", "sliding-re-prefill"])
def test_cache_reuse_matches_recompute_from_scratch(
    request: pytest.FixtureRequest, kv_cache: str, reserve: int
) -> None:
    fixture = "tiny_model_dir" if kv_cache == "shared" else "tiny_append_model_dir"
    directory: Path = request.getfixturevalue(fixture)
    model = OnnxModel(directory, RuntimeConfig(threads=1, reserve_tokens=reserve))
    shared = {kv.layer for kv in model.layout if kv.length_slot is not None}
    assert shared == ({0, 1, 2, 3} if kv_cache == "shared" else set())
    # The random model says <eos> early; stop on a token it never picks, so hypotheses
    # run to the length limit or the repetition guard and exercise long decodes.
    model.stop_ids = frozenset({model.tokenizer.token_id("<pad>", "test")})
    policy = DecodePolicy(length_ratio=1.0, length_margin=6, max_new_tokens=24)
    budget = 160

    incremental = LanguageStream(model, "de", policy, context_tokens=budget)
    scratch = LanguageStream(model, "de", policy, context_tokens=budget)
    scratch.decoder = ScratchDecoder(model, policy)  # type: ignore[assignment]
    baseline = LanguageStream(model, "de", policy, context_tokens=budget, reuse=False)

    started = time.perf_counter()
    expected = _run(scratch)
    got = _run(incremental)
    assert got == expected
    assert _run(baseline) == expected
    assert time.perf_counter() - started < 120

    assert incremental.conversation.evictions >= 1, "the script must pass the context budget"
    if reserve > 32:  # rollbacks stay in place: far fewer tokens fed than re-prefilling
        assert incremental.prefilled_tokens * 3 < baseline.prefilled_tokens
    else:  # rollbacks past the sliding window re-prefill, and stay exact
        assert incremental.prefilled_tokens < baseline.prefilled_tokens
    assert any(total >= 4 for _, _, total in got), "hypotheses must be long enough to matter"
