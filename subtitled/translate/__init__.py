"""The translate stage: streaming translation with incremental KV-cache reuse.

    manifest.py  the model directory's manifest (schema shared with `export/`)
    config.py    the [translation] configuration section
    cache.py     pure core: which ids the KV cache holds, what to keep, roll back, feed
    prompt.py    pure core: the rolling conversation (context pairs, budget eviction)
    policy.py    pure core: LocalAgreement over the target, length limit, repetition guard
    tokenizer.py the `tokenizers` tokenizer, text pieces to ids
    runtime.py   ONNX Runtime session of a verified model directory
    kvcache.py   the cache tensors of one conversation: shared buffers written in place
    decoder.py   greedy decoding over one cache, with the previous hypothesis as a draft
    stream.py    one language's stream; `OnnxTranslator`: one cache per language
    openai.py    backend for an OpenAI-compatible server on loopback (no cache control)
    models.py    where models are found; the factory for the configured backend
    stage.py     the async shell between ASR and publish (worker thread, restarts)
"""
