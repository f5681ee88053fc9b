"""Numbers the README and the manual state about the quick start's model and its finetuning, recomputed
(the ones a run measures, losses and accuracies, come from a full run and are recorded with it)."""
from minigpt.model import GPTConfig
from minigpt.model.classifier import GPTClassifier
from minigpt.train.finetune import apply_train_mode

# README quick start: "model mini: 2,195,328 parameters" (the `mini` preset with the 2,048-token BPE)
MINI = GPTConfig.preset("mini", vocab_size=2048)


def test_quickstart_model_size():
    from minigpt.model import GPT

    assert GPT(MINI).num_parameters() == 2_195_328


def test_finetuning_trainable_counts():
    """docs/finetuning.md: `last-blocks:1` trains 445,058 parameters of the quick start's model with a
    two-class head; LoRA rank 16 trains 196,994 (196,608 in the adapters plus the head's 386)."""
    clf = GPTClassifier(MINI, ["ham", "spam"])
    assert apply_train_mode(clf, "last-blocks:1") == 445_058
    clf = GPTClassifier(MINI, ["ham", "spam"])
    n = apply_train_mode(clf, "lora", lora_rank=16, lora_alpha=16)
    assert n == 196_994
    assert 4 * 16 * ((192 + 576) + (192 + 192) + (192 + 768) + (768 + 192)) == 196_608 == n - (192 * 2 + 2)
