import math

import pytest
from llmc.errors import UserError
from llmc.runtime.sampling_params import SamplingParams, uniform_draw


def test_defaults_and_normalisation():
    p = SamplingParams(top_k=-1, stop="###", stop_token_ids=[7, 8])
    assert p.top_k == 0
    assert p.stop == ("###",)
    assert p.stop_token_ids == (7, 8)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert not p.greedy
    assert SamplingParams(temperature=0).greedy


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("temperature", -1.0),
        ("temperature", math.inf),
        ("temperature", math.nan),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("top_k", -2),
        ("seed", -1),
        ("seed", 2**63),
        ("stop", [""]),
        ("stop_token_ids", [-3]),
    ],
)
def test_bad_field_names_the_field(field, value):
    with pytest.raises(UserError, match=f"^{field} must be"):
        SamplingParams(**{field: value})


def test_params_are_frozen():
    with pytest.raises(AttributeError):
        SamplingParams().temperature = 0.5


def test_uniform_draw_is_a_pure_function_of_seed_and_index():
    draws = [uniform_draw(1234, i) for i in range(100)]
    assert draws == [uniform_draw(1234, i) for i in range(100)]
    assert all(0.0 <= u < 1.0 for u in draws)
    assert len(set(draws)) == 100
    assert uniform_draw(1235, 0) != uniform_draw(1234, 0)
    assert uniform_draw(2**63 - 1, 5) == uniform_draw(2**63 - 1, 5)
