"""Model export tooling: Hugging Face checkpoints to ONNX, quantisation plans, verification.

Heavy dependencies (torch, transformers, onnx) are imported only by the modules that need
them; `spec` and `plan` need none of them. Install them with `pip install -e ".[export]"`.
"""
