"""llama.cpp as the decoder of `bench-translate`: what Ollama and LM Studio users run.

`LlamaCppDecoder` takes the place of a `LanguageStream`'s ONNX `Decoder`: the same prompts
(token ids from the exported model's tokenizer, which is the GGUF's own), the same forced
prefix, length limit and repetition guards, greedy. What it reuses between updates is
llama.cpp's own prompt cache, as its server does with `cache_prompt`: the longest common
prefix of the new prompt and the tokens its context holds stays, the rest is evaluated
again. It has no draft check (the previous hypothesis' tail is decoded token by token), and
no sliding-window rollback limit (llama.cpp keeps whole windows).

llama-cpp-python is not a dependency of subtitled; see export/README.md for a build that
runs on AMX-capable CPUs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from subtitled.errors import ConfigError
from subtitled.translate.decoder import DecodeResult
from subtitled.translate.policy import DecodePolicy


def common_prefix(held: Sequence[int], wanted: Sequence[int]) -> int:
    """How many leading ids `held` and `wanted` share."""
    n = 0
    for a, b in zip(held, wanted, strict=False):
        if a != b:
            break
        n += 1
    return n


class LlamaCppModel:
    """One llama.cpp context on a GGUF file (one per target language: one KV cache each)."""

    def __init__(self, path: Path, threads: int, n_ctx: int, vocab_size: int) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError(
                "--llama-cpp needs llama-cpp-python (not a dependency; see export/README.md "
                "for a build that runs here)"
            ) from exc
        if not path.is_file():
            raise ConfigError(f"--llama-cpp: {path} is not a file")
        self._llama_cpp: Any = llama_cpp
        self.llm: Any = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
            logits_all=False, verbose=False,
        )
        self.vocab = int(self.llm.n_vocab())
        if self.vocab != vocab_size:
            raise ConfigError(
                f"--llama-cpp: {path} has {self.vocab} tokens, the translation model "
                f"{vocab_size}: give the GGUF the model was exported from"
            )
        self.held: list[int] = []
        self.prefilled_tokens = 0
        self.calls = 0

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        """Evaluate `ids` after what is held; the logits of the last one (vocab,)."""
        self.llm.n_tokens = len(self.held)  # eval drops the cache from n_tokens on
        self.llm.eval(list(ids))
        self.held.extend(ids)
        self.prefilled_tokens += len(ids)
        self.calls += 1
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,))

    def keep(self, n: int) -> None:
        """Drop all but the first `n` held tokens (the next `feed` removes them from the
        KV cache)."""
        del self.held[n:]


class LlamaCppDecoder:
    """`Decoder.decode`'s contract over a `LlamaCppModel`."""

    def __init__(self, model: LlamaCppModel, policy: DecodePolicy,
                 stop_ids: frozenset[int]) -> None:
        self.model = model
        self.policy = policy
        self.stop_ids = stop_ids

    def reset(self) -> None:
        self.model.keep(0)

    def decode(
        self,
        prompt: Sequence[int],
        forced: Sequence[int],
        limit: int,
        draft: Sequence[int] = (),
    ) -> DecodeResult:
        """Greedy continuation of `prompt + forced`, at most `limit` tokens in all; `draft`
        is ignored (llama.cpp's prompt cache has no such check)."""
        del draft
        started = time.perf_counter()
        model = self.model
        fed_before, calls_before = model.prefilled_tokens, model.calls
        head = list(prompt) + list(forced)
        # Reuse the longest common prefix, but re-evaluate at least the last head token:
        # its logits start the decoding.
        model.keep(min(common_prefix(model.held, head), len(head) - 1))
        logits = model.feed(head[len(model.held):])
        tokens = list(forced)
        steps = 0
        stopped = False
        while len(tokens) < limit:
            next_id = int(np.argmax(logits))
            if next_id in self.stop_ids:
                stopped = True
                break
            tokens.append(next_id)
            if self.policy.cut_runaway(tokens, len(forced)):
                break
            if len(tokens) >= limit:
                break
            logits = model.feed([next_id])
            steps += 1
        return DecodeResult(
            tokens=tuple(tokens),
            stopped=stopped,
            prefilled=model.prefilled_tokens - fed_before - steps,
            decode_steps=steps,
            calls=model.calls - calls_before,
            compute_s=time.perf_counter() - started,
        )
