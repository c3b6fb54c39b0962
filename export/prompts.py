"""Default translation prompt templates per family, as data (the chat format each family's
instruction-tuned checkpoints were trained on). A checkpoint's `subtitled.json` overrides
any field. `{language}` is the target language's name, `{source}` the sentence."""

from __future__ import annotations

from subtitled.translate.manifest import PromptTemplate

_ASK = "Translate into {language}:\n{source}"

_GEMMA = PromptTemplate(
    preamble="",
    source_turn=f"<start_of_turn>user\n{_ASK}<end_of_turn>\n<start_of_turn>model\n",
    target_end="<end_of_turn>\n",
    stop=("<end_of_turn>", "<eos>"),
    languages={},
)
_CHATML = PromptTemplate(  # Qwen3, Qwen3-MoE
    preamble="",
    source_turn=f"<|im_start|>user\n{_ASK}<|im_end|>\n<|im_start|>assistant\n",
    target_end="<|im_end|>\n",
    stop=("<|im_end|>", "<|endoftext|>"),
    languages={},
)
_MISTRAL = PromptTemplate(
    preamble="",
    source_turn=f"[INST] {_ASK} [/INST]",
    target_end="</s>",
    stop=("</s>",),
    languages={},
)
_LLAMA4 = PromptTemplate(
    preamble="",
    source_turn=(
        f"<|header_start|>user<|header_end|>\n\n{_ASK}<|eot|>"
        "<|header_start|>assistant<|header_end|>\n\n"
    ),
    target_end="<|eot|>",
    stop=("<|eot|>", "<|end_of_text|>"),
    languages={},
)
# DeepSeek's special tokens use FULLWIDTH VERTICAL LINE (U+FF5C) on purpose.
_BAR = "\uff5c"
_DEEPSEEK = PromptTemplate(
    preamble="",
    source_turn=f"<{_BAR}User{_BAR}>{_ASK}<{_BAR}Assistant{_BAR}>",
    target_end=f"<{_BAR}end▁of▁sentence{_BAR}>",
    stop=(f"<{_BAR}end▁of▁sentence{_BAR}>",),
    languages={},
)

PROMPTS: dict[str, PromptTemplate] = {
    "gemma3_text": _GEMMA,
    "gemma4_text": _GEMMA,
    "qwen3": _CHATML,
    "qwen3_moe": _CHATML,
    "mixtral": _MISTRAL,
    "llama4_text": _LLAMA4,
    "deepseek_v3": _DEEPSEEK,
}
