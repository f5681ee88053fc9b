"""Generation: greedy/temperature/top-k/top-p sampling, eos, the sliding window and the KV cache."""
import numpy as np
import pytest

import minigpt
from minigpt.model import GPT, GPTConfig, generate, generate_stream
from minigpt.model.generation import _filter_logits


@pytest.fixture(scope="module")
def model():
    minigpt.random.manual_seed(1)
    return GPT(GPTConfig(vocab_size=29, context_length=10, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1))


@pytest.mark.parametrize("prompt_len,new", [(3, 5), (4, 20), (10, 4), (15, 3)])
def test_greedy_with_cache_equals_without(model, prompt_len, new):
    prompt = np.random.default_rng(prompt_len).integers(0, 29, (2, prompt_len))
    a = generate(model, prompt, new, temperature=0.0, use_cache=True)
    b = generate(model, prompt, new, temperature=0.0, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, prompt_len + new)
    np.testing.assert_array_equal(a[:, :prompt_len], prompt)


def test_greedy_is_argmax_of_full_forward(model):
    prompt = np.array([3, 1, 4, 1, 5])
    out = generate(model, prompt, 1, temperature=0.0)
    model.eval()
    expect = np.argmax(model(prompt[None]).data[0, -1])
    model.train()
    assert out.shape == (6,) and out[-1] == expect


def test_sampling_is_seeded_and_filters(model):
    p = np.array([[1, 2, 3]])
    a = generate(model, p, 8, temperature=1.0, seed=7)
    b = generate(model, p, 8, temperature=1.0, seed=7)
    np.testing.assert_array_equal(a, b)
    greedy = generate(model, p, 8, temperature=0.0)
    np.testing.assert_array_equal(generate(model, p, 8, temperature=1.3, top_k=1, seed=3), greedy)
    np.testing.assert_array_equal(generate(model, p, 8, temperature=1.0, top_p=1e-9, seed=3), greedy)
    assert model.training  # generation restores the mode


def test_filter_logits_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    k2 = _filter_logits(logits, 2, None)
    assert np.isfinite(k2[0, :2]).all() and np.isinf(k2[0, 2:]).all()
    p = _filter_logits(logits, None, 0.7)  # 0.5 + 0.2 reaches 0.7 -> keep two
    assert np.isfinite(p[0, :2]).all() and np.isinf(p[0, 2:]).all()
    p = _filter_logits(logits, None, 0.71)
    assert np.isfinite(p[0, :3]).all() and np.isinf(p[0, 3:]).all()


def test_sampling_distribution_follows_temperature():
    from minigpt.model.generation import sample_next

    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.6, 0.3, 0.1]] * 20000))
    ids = sample_next(logits, 1.0, None, None, rng)
    np.testing.assert_allclose(np.bincount(ids, minlength=3) / len(ids), [0.6, 0.3, 0.1], atol=0.015)


def test_eos_stops(model):
    prompt = np.array([[1, 2]])
    first = generate(model, prompt, 1, temperature=0.0)[0, -1]
    out = generate(model, prompt, 10, temperature=0.0, eos_id=int(first))
    assert out.shape == (1, 3) and out[0, -1] == first
    steps = list(generate_stream(model, prompt, 10, temperature=0.0, eos_id=int(first)))
    assert len(steps) == 1


def test_generate_errors(model):
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1], 2, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [1], 2, top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, [1], 2, top_k=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [99], 2)
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, np.zeros((1, 0), dtype=np.int64), 2)


def test_last_only_logits_equal_the_last_row(model):
    ids = np.array([[4, 8, 15, 16, 23, 4]])
    model.eval()
    full = model(ids).data
    last = model(ids, last_only=True).data
    model.train()
    assert last.shape == (1, 1, 29)
    np.testing.assert_allclose(last[:, 0], full[:, -1], rtol=1e-6, atol=1e-6)
