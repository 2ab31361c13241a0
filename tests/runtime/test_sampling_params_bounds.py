"""SamplingParams at the edges of each range: the last value accepted, the first refused, and a
message that names the field; the per-token uniform draw pinned to its values.

(Written for the survivors of the mutation run in docs/MUTATION.md.)
"""

import pytest

from llmc.errors import UserError
from llmc.runtime.sampling_params import (INT32_MAX, MAX_STOP_CHARS, MAX_STOPS, MAX_TEMPERATURE, MIN_TEMPERATURE,
                                          SamplingParams, uniform_draw)


@pytest.mark.parametrize("field, value", [
    ("max_tokens", 1), ("max_tokens", INT32_MAX), ("temperature", 0), ("temperature", MIN_TEMPERATURE),
    ("temperature", MAX_TEMPERATURE), ("top_p", 1.0), ("top_p", 1e-30), ("top_k", 0), ("top_k", INT32_MAX),
    ("n", 1), ("seed", 0), ("seed", 2**63 - 1), ("stop_token_ids", (0, INT32_MAX)),
    ("stop", ("x",) * MAX_STOPS), ("stop", ("x" * MAX_STOP_CHARS,)),
])
def test_last_values_accepted(field, value):
    params = SamplingParams(**{field: value})
    assert getattr(params, field) == value


def test_top_k_minus_one_means_off():
    assert SamplingParams(top_k=-1).top_k == 0


@pytest.mark.parametrize("field, value", [
    ("max_tokens", 0), ("max_tokens", INT32_MAX + 1), ("max_tokens", 2.0), ("temperature", MIN_TEMPERATURE / 2),
    ("temperature", MAX_TEMPERATURE * 2), ("temperature", -1.0), ("temperature", float("inf")),
    ("temperature", float("nan")), ("temperature", "1"), ("top_p", 0.0), ("top_p", 1.0001), ("top_p", 1e-50),
    ("top_p", True), ("top_k", -2), ("top_k", INT32_MAX + 1), ("n", 0), ("seed", -1), ("seed", 2**63),
    ("stop_token_ids", (-1,)), ("stop_token_ids", (INT32_MAX + 1,)), ("stop_token_ids", (1.5,)),
    ("stop_token_ids", (0,) * (MAX_STOPS + 1)), ("stop", ("x",) * (MAX_STOPS + 1)), ("stop", ("",)),
    ("stop", ("x" * (MAX_STOP_CHARS + 1),)), ("ignore_eos", 1), ("include_stop_str_in_output", "yes"),
])
def test_first_values_refused_name_the_field(field, value):
    with pytest.raises(UserError) as e:
        SamplingParams(**{field: value})
    named = "stop and stop_token_ids" if isinstance(value, tuple) and len(value) > MAX_STOPS else field
    assert str(e.value).startswith(named), str(e.value)


def test_uniform_draw_is_pinned():
    # a request's samples depend on (seed, index) only: changing these values changes every seeded output
    draws = [uniform_draw(0, 0), uniform_draw(1, 0), uniform_draw(0, 1), uniform_draw(42, 7), uniform_draw(2**63 - 1, 1000)]
    assert draws == [0.5079605879681605, 0.17601256256594233, 0.4224192380508798, 0.39175588486644874, 0.749416930472906]
