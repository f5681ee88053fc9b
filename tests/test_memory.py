"""Memory: the estimate a training run is checked against, and the warning before a run that does not fit."""
from minigpt.model import GPT, GPTConfig
from minigpt.train.run import available_memory, warn_if_too_big


def test_warns_only_when_the_estimate_exceeds_available_memory():
    model = GPT(GPTConfig.preset("nano"))
    est = model.memory_estimate(4, 64)
    assert est["total"] == sum(v for k, v in est.items() if k != "total") > est["parameters"] > 0
    said = []
    assert warn_if_too_big(model, 4, 64, said.append, available=est["total"] - 1)
    assert "GiB" in said[0] and "--batch-size" in said[0]
    said.clear()
    assert not warn_if_too_big(model, 4, 64, said.append, available=est["total"] + 1) and not said
    avail = available_memory()
    assert avail is None or avail > 0


def test_estimate_counts_the_book_loss_paths_second_logits_buffer():
    import pytest

    model = GPT(GPTConfig.preset("nano"))
    fused, book = model.memory_estimate(4, 64), model.memory_estimate(4, 64, loss_path="book")
    assert book["total"] - fused["total"] == 4 * 64 * model.config.vocab_size * 4  # one (B*T, vocab) float32
    assert fused["runtime"] > 0 and "gradients" not in model.memory_estimate(4, 64, training=False)
    with pytest.raises(ValueError, match="loss_path must be"):
        model.memory_estimate(4, 64, loss_path="other")
