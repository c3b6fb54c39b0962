"""A dense Gemma 3 split into routed experts (`export.moe_split`): the split is a partition
of each MLP's neurons, the router picks what it was fitted to, and the split model exports
and verifies against its PyTorch form like any family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from export_configs import tiny_gemma3, tiny_gemma3_split

REASON = "the export extra is not installed: pip install -e '.[export]'"
torch = pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)
pytest.importorskip("onnx", reason=REASON)

from export import moe_split  # noqa: E402
from export.cli import main  # noqa: E402
from export.errors import ExportError  # noqa: E402
from export.families import spec_from_config  # noqa: E402
from export.reference import random_model  # noqa: E402
from export.verify import FP32_MAX_DIFF, verify  # noqa: E402


def _batches(vocab: int, count: int = 4) -> list[Any]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(4, vocab, (2, 48), generator=generator) for _ in range(count)]


def _split(experts: int, top_k: int) -> tuple[Any, Any, list[moe_split.LayerSplit]]:
    config = tiny_gemma3()
    dense = random_model(config, seed=3)
    model = random_model(config, seed=3)
    report = moe_split.split_from_dense(
        model, _batches(config["vocab_size"]), experts, top_k, lambda _: None
    )
    return dense, model, report


def test_every_expert_chosen_is_the_dense_mlp_exactly() -> None:
    """The experts partition the neurons: all of them on, each weighing 1, compute the
    dense MLP."""
    dense, model, _ = _split(4, 4)
    x = torch.randn(10, 64, generator=torch.Generator().manual_seed(1))
    for before, after in zip(dense.model.layers, model.model.layers, strict=True):
        index = torch.arange(4).expand(10, 4)
        weights = torch.ones(10, 4)
        with torch.no_grad():
            assert torch.allclose(after.experts(x, index, weights), before.mlp(x), atol=1e-5)


def test_the_router_picks_close_to_the_best_experts() -> None:
    _, model, report = _split(4, 2)
    assert len(report) == 4
    for layer in report:
        assert 0.0 <= layer.oracle_error <= layer.relative_error + 1e-6 < 1.0, layer
    assert model.config.num_experts == 4 and model.config.top_k_experts == 2
    with torch.no_grad():  # the split model still runs end to end
        logits = model(input_ids=_batches(384, 1)[0]).logits
    assert torch.isfinite(logits).all()


def test_training_runs_the_experts_as_one_masked_mlp_with_the_same_output() -> None:
    """In training the routed layer computes every expert and weighs the unchosen ones 0
    (fast on a CPU); the sum is the expert loop's, and the router still learns."""
    _, model, _ = _split(4, 2)
    ids = _batches(384, 1)[0]
    model.eval()
    with torch.no_grad():
        looped = model(input_ids=ids).logits
    model.train()
    masked = model(input_ids=ids).logits
    assert torch.allclose(masked, looped, atol=1e-4), (masked - looped).abs().max()
    masked.float().pow(2).mean().backward()
    router = model.model.layers[0].router.proj.weight
    assert router.grad is not None and router.grad.abs().sum() > 0


def test_a_sharp_router_is_tempered_to_weigh_its_choices_alike() -> None:
    """A fitted router's softmax is sharp; times the per-expert scale k its top expert
    would count up to k times. After the split each layer's routed output is near the
    best choice of experts, not past the dense output's own size."""
    _, _, report = _split(4, 2)
    for layer in report:
        assert layer.relative_error <= layer.oracle_error + 0.25, layer


def test_the_spec_puts_routed_experts_in_the_mlps_place() -> None:
    spec = spec_from_config(tiny_gemma3_split())
    for layer in spec.layers:
        assert layer.mlp is None and layer.moe is not None
        assert (layer.moe.num_experts, layer.moe.top_k) == (4, 2)
        assert {"router.scale", "router.per_expert_scale"} <= {v.key for v in layer.vectors}


@pytest.mark.parametrize(("experts", "top_k"), [(3, 1), (4, 4), (1, 1), (6, 2)])
def test_a_split_the_kernels_cannot_take_is_named(experts: int, top_k: int) -> None:
    with pytest.raises(ExportError, match=f"--experts {experts}"):
        moe_split.expert_count_valid(2048, experts, top_k)


def _export(config: dict[str, Any], root: Path, *args: str) -> Path:
    (root / "config.json").write_text(json.dumps(config))
    out = root / "model"
    argv = ["onnx", "--config", str(root / "config.json"), "--random-weights", "--out", str(out)]
    assert main([*argv, *args]) == 0
    return out


def test_a_random_split_model_verifies_at_fp32(tmp_path: Path) -> None:
    report = verify(_export(tiny_gemma3_split(), tmp_path))
    assert report.max_abs_logit_diff <= FP32_MAX_DIFF and report.tokens_identical, report


def test_a_split_checkpoint_exports_at_int8_on_the_native_kernel(tmp_path: Path) -> None:
    """A dense model split here, saved as a checkpoint, exported by `onnx --model`:
    verify loads it back through `moe_split` and the int8 graph stays close."""
    _, model, _ = _split(4, 2)
    checkpoint = tmp_path / "split"
    model.save_pretrained(checkpoint, safe_serialization=True)
    saved = json.loads((checkpoint / "config.json").read_text())
    assert saved["num_experts"] == 4 and saved["moe_intermediate_size"] == 32
    out = tmp_path / "model"
    argv = ["onnx", "--model", str(checkpoint), "--out", str(out), "--precision", "int8"]
    assert main([*argv, "--licence", "MIT (test)"]) == 0
    graph = (out / "model.onnx").read_bytes()
    assert b"SparseExperts" in graph or b"MatMulInteger" in graph
    report = verify(out)
    assert report.mean_cosine >= 0.99 and report.top1_agreement >= 0.9, report
