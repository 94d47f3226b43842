"""The model zoo: transformer shapes of the models the field trials train, and what they cost.

Parameter counts follow from the shapes (no published totals are typed in): embeddings, attention
(grouped-query where the model uses it), the feed-forward network (gated SwiGLU or a plain MLP,
per expert for mixtures of experts), norms and biases. Training FLOPs per token are 6 x the active
parameters plus the attention scores, 12 x layers x sequence x hidden (forward and backward).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int  # feed-forward inner size (per expert)
    vocab: int
    kv_heads: int = 0  # 0: as many as heads (no grouped-query attention)
    gated_ffn: bool = True  # SwiGLU: three matrices; otherwise up and down projections
    biases: bool = False  # GPT-3 style linear biases
    tied_embeddings: bool = False  # the output head shares the input embedding
    learned_positions: int = 0  # GPT-3: a learned position table of this many rows
    experts: int = 1
    experts_per_token: int = 1

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return (self.kv_heads or self.heads) * self.head_dim

    def attention_parameters(self) -> int:
        h = self.hidden
        weights = h * h + 2 * h * self.kv_dim + h * h  # q, k, v, o
        biases = (h + 2 * self.kv_dim + h) if self.biases else 0
        return weights + biases

    def expert_parameters(self) -> int:
        h, f = self.hidden, self.ffn
        weights = (3 if self.gated_ffn else 2) * h * f
        biases = (f + h) if self.biases else 0
        return weights + biases

    def layer_parameters(self, active: bool = False) -> int:
        experts = self.experts_per_token if active else self.experts
        router = self.hidden * self.experts if self.experts > 1 else 0
        norms = 2 * self.hidden * (2 if self.biases else 1)  # LayerNorm has a bias, RMSNorm none
        return self.attention_parameters() + experts * self.expert_parameters() + router + norms

    def embedding_parameters(self) -> int:
        table = self.vocab * self.hidden
        head = 0 if self.tied_embeddings else table
        final_norm = self.hidden * (2 if self.biases else 1)
        return table + head + final_norm + self.learned_positions * self.hidden

    def parameters(self, active: bool = False) -> int:
        """All parameters, or with ``active`` those one token uses (its experts only)."""
        return self.layers * self.layer_parameters(active) + self.embedding_parameters()

    def training_flops_per_token(self, sequence: int) -> int:
        """Forward and backward: 6 x active parameters, plus 12 x layers x sequence x hidden for the
        attention scores (QK^T and the weighted sum over values)."""
        return 6 * self.parameters(active=True) + 12 * self.layers * sequence * self.hidden


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama2-7b", layers=32, hidden=4096, heads=32, ffn=11008, vocab=32000),
        ModelSpec("llama2-13b", layers=40, hidden=5120, heads=40, ffn=13824, vocab=32000),
        ModelSpec("llama2-70b", layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672, vocab=32000),
        ModelSpec("gpt3-175b", layers=96, hidden=12288, heads=96, ffn=4 * 12288, vocab=50257, gated_ffn=False,
                  biases=True, tied_embeddings=True, learned_positions=2048),
        ModelSpec("mixtral-8x7b", layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, vocab=32000,
                  experts=8, experts_per_token=2),
    )
}
