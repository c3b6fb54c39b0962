"""The model's tokenizer (a `tokenizers` JSON file named by the manifest).

Prompts are built from pieces encoded separately (preamble, each source turn, each
translation, each end marker) and joined as ids, so a piece's ids never change when the
text after it grows: the KV cache of a finished piece stays valid (see `prompt.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from subtitled.errors import ModelError


class Tokenizer:
    """Encode text pieces without added special tokens; decode generated ids."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        try:
            self._tokenizer = HfTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelError(f"tokenizer {path} cannot be loaded: {exc}") from exc
        self.path = path
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> tuple[int, ...]:
        """Ids of `text`; special tokens written in it (`<sep>`) become their single id."""
        if not text:
            return ()
        return tuple(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))

    def token_id(self, token: str, where: str) -> int:
        """The id of a single token string (a stop token); an error names `where` it came from."""
        found = self._tokenizer.token_to_id(token)
        if found is None:
            ids = self.encode(token)
            if len(ids) != 1:
                raise ModelError(f"{where}: {token!r} is not a single token of {self.path}")
            found = ids[0]
        return int(found)
