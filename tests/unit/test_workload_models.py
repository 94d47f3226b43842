"""The model zoo against the parameter counts the model cards publish (the code derives them from
the shapes; the published figures only check it) and the training FLOPs closed form."""

from __future__ import annotations

import pytest

from orchestrator.workload.models import MODELS


@pytest.mark.parametrize(("name", "published"), [
    ("llama2-7b", 6_738_415_616),  # Hugging Face config: exact totals
    ("llama2-13b", 13_015_864_320),
    ("llama2-70b", 68_976_648_192),
    ("mixtral-8x7b", 46_702_792_704),
])
def test_parameter_counts_follow_from_the_shapes(name: str, published: int) -> None:
    assert MODELS[name].parameters() == published


def test_gpt3_is_175_billion_and_mixtral_uses_two_experts_a_token() -> None:
    assert MODELS["gpt3-175b"].parameters() == pytest.approx(175e9, rel=0.005)
    mixtral = MODELS["mixtral-8x7b"]
    assert mixtral.parameters(active=True) == pytest.approx(12.9e9, rel=0.01)
    # the inactive experts are the difference: 6 of 8 per layer
    assert mixtral.parameters() - mixtral.parameters(active=True) == 32 * 6 * mixtral.expert_parameters()


def test_training_flops_are_six_per_parameter_plus_attention() -> None:
    m = MODELS["llama2-13b"]
    seq = 4096
    assert m.training_flops_per_token(seq) == 6 * m.parameters() + 12 * 40 * seq * 5120
    # attention adds 2 l s h / N over 6 N: 13 % at 4k tokens for 13B, 3 % at 1k
    assert m.training_flops_per_token(seq) / (6 * m.parameters()) == pytest.approx(1.129, abs=0.001)
    assert m.training_flops_per_token(1024) / (6 * m.parameters()) == pytest.approx(1.032, abs=0.001)
