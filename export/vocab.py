"""A BPE vocabulary trimmed to the tokens a corpus uses, with a tokenizer that gives exactly
the trimmed ids.

At Gemma 3 270M's size the 262,144-token embedding (and the tied LM head) is 168 M of its
268 M parameters and most of a training step's compute; English, German and Spanish text
uses a small part of it. `trim()` keeps

- every token the corpus uses at least `min_count` times,
- the ancestors of every kept token in the merge tree (the two parts of every merge that
  makes it), so a kept token stays reachable by whichever path BPE takes: text whose
  tokens are all kept is tokenized exactly as by the full vocabulary,
- byte-fallback tokens (`<0x00>`..`<0xFF>`) and the special tokens asked for, so any
  other text still encodes (in more, smaller pieces),

and drops the merges whose result is dropped. Kept tokens keep their order (so `<pad>`,
`<eos>`, `<bos>` keep their low ids); `old_ids[new_id]` maps embeddings across.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from export.errors import ExportError


@dataclass(frozen=True)
class Trimmed:
    """The trimmed tokenizer and, for each new id, the id it had before."""

    tokenizer_json: str
    old_ids: list[int]


def _merge_parts(merge: Any) -> tuple[str, str]:
    if isinstance(merge, str):
        left, _, right = merge.partition(" ")
        return left, right
    return str(merge[0]), str(merge[1])


def count_tokens(tokenizer: Tokenizer, texts: Iterable[str], batch: int = 4096) -> Counter[int]:
    """How often each id occurs when `texts` are encoded (no special tokens added)."""
    counts: Counter[int] = Counter()
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == batch:
            for encoding in tokenizer.encode_batch(chunk, add_special_tokens=False):
                counts.update(encoding.ids)
            chunk = []
    for encoding in tokenizer.encode_batch(chunk, add_special_tokens=False):
        counts.update(encoding.ids)
    return counts


def trim(
    tokenizer_json: str, counts: Counter[int], min_count: int, specials: Iterable[str]
) -> Trimmed:
    """Keep the tokens of `counts` seen `min_count` times or more (see the module doc)."""
    data = json.loads(tokenizer_json)
    model = data["model"]
    if model.get("type") != "BPE":
        raise ExportError(f"vocabulary trimming needs a BPE tokenizer, not {model.get('type')}")
    vocab: dict[str, int] = model["vocab"]
    by_id = {i: token for token, i in vocab.items()}
    # every merge that makes a token: BPE may reach one string by several paths
    parts: dict[str, list[str]] = {}
    for merge in model.get("merges", []):
        left, right = _merge_parts(merge)
        parts.setdefault(left + right, []).extend((left, right))
    keep: set[str] = {by_id[i] for i, n in counts.items() if n >= min_count and i in by_id}
    keep.update(f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" in vocab)
    for special in specials:
        if special not in vocab:
            raise ExportError(f"special token {special!r} is not in the tokenizer")
        keep.add(special)
    stack = list(keep)
    while stack:  # ancestors in the merge tree
        for part in parts.get(stack.pop(), ()):
            if part not in keep and part in vocab:
                keep.add(part)
                stack.append(part)
    old_ids = sorted(vocab[token] for token in keep)
    new_id = {by_id[old]: new for new, old in enumerate(old_ids)}
    model["vocab"] = new_id
    model["merges"] = [
        merge
        for merge in model.get("merges", [])
        if "".join(_merge_parts(merge)) in new_id
        and all(part in new_id for part in _merge_parts(merge))
    ]
    data["added_tokens"] = [
        {**added, "id": new_id[added["content"]]}
        for added in data.get("added_tokens", [])
        if added["content"] in new_id
    ]
    post = data.get("post_processor")
    if post is not None:
        data["post_processor"] = _remap_post_processor(post, new_id)
    return Trimmed(json.dumps(data, ensure_ascii=False), old_ids)


def _remap_post_processor(node: Any, new_id: dict[str, int]) -> Any:
    """Special-token ids inside a TemplateProcessing post-processor, remapped."""
    if isinstance(node, dict):
        if "special_tokens" in node:
            for spec in node["special_tokens"].values():
                spec["ids"] = [new_id[t] for t in spec["tokens"] if t in new_id]
        for key, value in node.items():
            node[key] = _remap_post_processor(value, new_id)
    elif isinstance(node, list):
        return [_remap_post_processor(item, new_id) for item in node]
    return node
