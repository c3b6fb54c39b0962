"""A dense Gemma 3 MLP split into routed experts (MoEfication: Zhang et al. 2022,
"MoEfication: Transformer Feed-forward Layers are Mixtures of Experts").

Each layer's `intermediate_size` neurons are grouped into E experts of I / E neurons by
co-activation on real tokens (balanced k-means over the neurons' activation patterns), so
neurons that fire together sit in one expert; a router is fitted to pick, per token, the
experts whose outputs are largest. The layer then computes k experts instead of all of
them: the MLP's compute and weight reads per token fall to k / E.

The experts and router are Gemma 4's (`Gemma4TextExperts`, `Gemma4TextRouter` from
transformers: GELU-tanh gated experts stored (E, 2 I/E, H) and (E, H, I/E); a weightless
RMSNorm, a learned scale, softmax, top-k renormalised, a per-expert scale), attached to
each decoder layer as `router` and `experts` in place of `mlp`, under the same checkpoint
keys as Gemma 4 (`model.layers.{i}.router.proj.weight`, `...experts.gate_up_proj`), fed the
MLP's own input (after `pre_feedforward_layernorm`). A config with `num_experts`,
`top_k_experts` and `moe_intermediate_size` describes such a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from export.errors import ExportError

ROUTER_STEPS = 300
RECORD_TOKENS = 8192
MOE_KEYS = ("num_experts", "top_k_experts", "moe_intermediate_size")


def is_split(config: Mapping[str, Any]) -> bool:
    """A Gemma 3 config whose MLPs are routed experts (`num_experts` set)."""
    return config.get("model_type") == "gemma3_text" and bool(config.get("num_experts"))


def from_config(config: Mapping[str, Any], attention: str = "sdpa") -> Any:
    """transformers' causal LM of `config` (weights as initialised); a split Gemma 3 gets
    its routers and experts attached."""
    import transformers

    # MoE keys are Gemma 4's own; only a split Gemma 3 has them attached here instead
    skip = ("model_type", "architectures", *(MOE_KEYS if is_split(config) else ()))
    settings = {k: v for k, v in config.items() if k not in skip}
    hf_config = transformers.AutoConfig.for_model(config["model_type"], **settings)
    hf_config._attn_implementation = attention
    auto: Any = transformers.AutoModelForCausalLM
    model = auto.from_config(hf_config)
    if is_split(config):
        attach_experts(model, int(config["num_experts"]), int(config["top_k_experts"]))
    return model


def load_safetensors(model: Any, directory: Path) -> None:
    """A checkpoint directory's safetensors into `model`: every tensor, nothing left over
    (a tied head aside)."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{directory} has no *.safetensors")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ExportError(
            f"{directory} does not fit: missing {missing[:5]}, extra {unexpected[:5]}"
        )


class _Routed(nn.Module):
    """The layer's MLP slot: route, then run the chosen experts. Holds no parameters of its
    own (the router and experts are the layer's, under Gemma 4's keys)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_layer", layer)  # not a submodule: no duplicate keys

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        layer: Any = self._layer
        flat = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
        _, weights, index = layer.router(flat)
        if self.training:
            out = _all_experts(layer.experts, flat, index, weights.to(flat.dtype))
        else:
            out = layer.experts(flat, index, weights.to(flat.dtype))
        return out.reshape(hidden.shape)


def _all_experts(
    experts: Any, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The routed experts' output computed as one masked dense MLP: every expert runs on
    every token and a token's unchosen experts weigh 0. The same sum as transformers'
    expert loop (which gathers each expert's tokens), at E / k times its arithmetic but in
    three large matrix products: on a CPU, training runs at the dense model's speed
    instead of a third of it."""
    count, _, hidden = experts.gate_up_proj.shape
    size = experts.intermediate_dim
    gate = experts.gate_up_proj[:, :size].reshape(count * size, hidden)
    up = experts.gate_up_proj[:, size:].reshape(count * size, hidden)
    down = experts.down_proj.permute(1, 0, 2).reshape(hidden, count * size)
    dense_weights = torch.zeros(x.shape[0], count, dtype=weights.dtype, device=x.device)
    dense_weights = dense_weights.scatter(1, index, weights)  # (N, E)
    act = experts.act_fn(nn.functional.linear(x, gate)) * nn.functional.linear(x, up)
    act = (act.reshape(x.shape[0], count, size) * dense_weights[:, :, None]).reshape(
        x.shape[0], count * size
    )
    out: torch.Tensor = nn.functional.linear(act, down)
    return out


def _moe_settings(config: Any, experts: int, top_k: int) -> SimpleNamespace:
    return SimpleNamespace(
        hidden_size=config.hidden_size,
        rms_norm_eps=config.rms_norm_eps,
        num_experts=experts,
        top_k_experts=top_k,
        moe_intermediate_size=config.intermediate_size // experts,
        hidden_activation=config.hidden_activation,
        _experts_implementation="eager",  # transformers' expert-kernel switch
    )


def attach_experts(model: Any, experts: int, top_k: int) -> None:
    """Replace every layer's dense MLP by a router and `experts` experts (weights left as
    initialised: load a state dict, or `split_from_dense`)."""
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextExperts, Gemma4TextRouter

    config = model.config
    if config.intermediate_size % experts:
        raise ExportError(
            f"intermediate_size {config.intermediate_size} does not split into {experts} experts"
        )
    settings: Any = _moe_settings(config, experts, top_k)
    # seeded: the same model splits the same way (the global RNG made every split differ)
    generator = torch.Generator().manual_seed(0)
    for layer in model.model.layers:
        layer.router = Gemma4TextRouter(settings)
        layer.experts = Gemma4TextExperts(settings)
        nn.init.normal_(layer.router.proj.weight, std=0.02, generator=generator)
        layer.mlp = _Routed(layer)
    config.num_experts = experts
    config.top_k_experts = top_k
    config.moe_intermediate_size = config.intermediate_size // experts


def balanced_clusters(features: torch.Tensor, groups: int, iterations: int = 15) -> torch.Tensor:
    """Assign each row of `features` (I, D) to one of `groups` clusters of exactly I / groups
    rows, by balanced k-means on cosine similarity: each round, rows are placed greedily
    (most confident first) into their most similar cluster that still has room."""
    rows = features.shape[0]
    size = rows // groups
    unit = nn.functional.normalize(features, dim=1)
    generator = torch.Generator().manual_seed(0)
    centres = unit[torch.randperm(rows, generator=generator)[:groups]].clone()
    assign = torch.zeros(rows, dtype=torch.long)
    for _ in range(iterations):
        similarity = unit @ centres.T  # (I, G)
        best, _ = similarity.max(dim=1)
        order = torch.argsort(best, descending=True)
        room = [size] * groups
        ranked = torch.argsort(similarity, dim=1, descending=True)
        for row in order.tolist():
            for group in ranked[row].tolist():
                if room[group]:
                    room[group] -= 1
                    assign[row] = group
                    break
        centres = torch.stack(
            [nn.functional.normalize(unit[assign == g].mean(0), dim=0) for g in range(groups)]
        )
    return assign


@dataclass(frozen=True)
class LayerSplit:
    """How well one layer's routed experts reproduce its dense MLP on held tokens."""

    layer: int
    relative_error: float
    """||moe(x) - mlp(x)|| / ||mlp(x)|| with the fitted router."""
    oracle_error: float
    """The same with the k experts of largest output chosen by hand (the router's ceiling)."""


def _record(model: Any, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's MLP inputs (N, H) over `batches` of token ids (padding never fed)."""
    inputs: list[list[torch.Tensor]] = [[] for _ in model.model.layers]
    hooks = []
    for index, layer in enumerate(model.model.layers):

        def hook(module: Any, args: Any, index: int = index) -> None:
            inputs[index].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())

        hooks.append(layer.mlp.register_forward_pre_hook(hook))
    with torch.no_grad():
        for ids in batches:
            model.model(input_ids=ids)
    for hook_handle in hooks:
        hook_handle.remove()
    return [torch.cat(chunks)[:RECORD_TOKENS] for chunks in inputs]


def _expert_outputs(mlp: Any, x: torch.Tensor, assign: torch.Tensor, experts: int) -> torch.Tensor:
    """(N, E): the norm of each neuron group's share of the MLP output."""
    act = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)  # (N, I)
    norms = []
    for e in range(experts):
        chosen = assign == e
        norms.append((act[:, chosen] @ mlp.down_proj.weight[:, chosen].T).norm(dim=1))
    return torch.stack(norms, dim=1)


def split_from_dense(
    model: Any,
    batches: Iterable[torch.Tensor],
    experts: int,
    top_k: int,
    progress: Callable[[str], None] = print,
) -> list[LayerSplit]:
    """Turn the dense `model` into its routed-expert form in place (see the module doc):
    neurons clustered by co-activation on `batches`, routers fitted to the experts'
    output norms and tempered so the chosen experts weigh alike, per-expert scales set to k
    (renormalised top-k weights average 1 / k, where the dense MLP weighs every neuron 1)."""
    recorded = _record(model, batches)
    dense = [layer.mlp for layer in model.model.layers]
    attach_experts(model, experts, top_k)
    report = []
    for index, (layer, mlp, x) in enumerate(zip(model.model.layers, dense, recorded, strict=True)):
        with torch.no_grad():
            act = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)  # (N, I)
            assign = balanced_clusters(act.abs().T, experts)
            size = mlp.gate_proj.weight.shape[0] // experts
            for e in range(experts):
                chosen = torch.nonzero(assign == e).flatten()
                layer.experts.gate_up_proj[e, :size] = mlp.gate_proj.weight[chosen]
                layer.experts.gate_up_proj[e, size:] = mlp.up_proj.weight[chosen]
                layer.experts.down_proj[e] = mlp.down_proj.weight[:, chosen]
            layer.router.per_expert_scale.fill_(float(top_k))
            target = _expert_outputs(mlp, x, assign, experts)  # (N, E)
        _fit_router(layer.router, x, target)
        _temper_router(layer, mlp, x)
        report.append(_measure(index, layer, mlp, x, target, top_k))
        progress(
            f"layer {index}: {experts} experts top-{top_k}, MLP output error "
            f"{report[-1].relative_error:.3f} (best choice {report[-1].oracle_error:.3f})"
        )
    return report


def _fit_router(router: Any, x: torch.Tensor, target: torch.Tensor) -> None:
    """Fit the router's logits to the experts' output norms (cross-entropy to the norms'
    softmax at temperature 1 / mean norm), so its top-k are the largest experts."""
    soft = torch.softmax(target / target.mean().clamp_min(1e-6) * 4.0, dim=1)
    params = [router.proj.weight, router.scale]
    optimiser = torch.optim.Adam(params, lr=1e-2)
    for _ in range(ROUTER_STEPS):
        normed = router.norm(x) * router.scale * router.scalar_root_size
        logits = router.proj(normed)
        loss = -(soft * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()


@torch.no_grad()
def _temper_router(layer: Any, mlp: Any, x: torch.Tensor) -> None:
    """Flatten the fitted router's weights among its chosen experts. The fit makes the
    softmax sharp, and with the per-expert scale k a token's top expert would count up to k
    times where the dense MLP counts every neuron once; dividing the logits keeps which
    experts win and evens their weights. The divisor is the one (of powers of two) with the
    least MLP output error on the recorded tokens."""
    reference = mlp(x)
    weight = layer.router.proj.weight
    fitted = weight.clone()
    best_error, best_factor = math.inf, 1.0
    for power in range(9):
        factor = 0.5**power
        weight.copy_(fitted * factor)
        error = float((layer.mlp(x) - reference).norm())
        if error < best_error:
            best_error, best_factor = error, factor
    weight.copy_(fitted * best_factor)


@torch.no_grad()
def _measure(
    index: int, layer: Any, mlp: Any, x: torch.Tensor, target: torch.Tensor, top_k: int
) -> LayerSplit:
    reference = mlp(x)
    routed = layer.mlp(x)
    best = torch.topk(target, top_k, dim=1).indices
    ones = torch.full(best.shape, 1.0 / top_k)
    oracle = layer.experts(x, best, ones * layer.router.per_expert_scale[best])
    scale = reference.norm().clamp_min(1e-12)
    return LayerSplit(
        index,
        float((routed - reference).norm() / scale),
        float((oracle - reference).norm() / scale),
    )


def active_fraction(config: Any) -> float:
    """The share of the MLP's neurons a token runs through."""
    experts = getattr(config, "num_experts", None)
    return 1.0 if not experts else config.top_k_experts / experts


def expert_count_valid(intermediate: int, experts: int, top_k: int) -> None:
    """Refuse a split the kernels cannot take, naming the numbers."""
    if experts < 2 or not 1 <= top_k < experts:
        raise ExportError(f"--experts {experts} --top-k {top_k}: need 2+ experts and 1 <= k < E")
    size = intermediate / experts
    if size != int(size) or int(size) % 32 or math.log2(experts) % 1:
        raise ExportError(
            f"--experts {experts}: intermediate size {intermediate} must split into a power "
            "of two of experts whose size is a multiple of 32 (the kernels' block)"
        )
