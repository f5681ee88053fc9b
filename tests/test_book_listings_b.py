"""The book's chapters 5, 6 and 7 as printed, on minigpt.book: the calls of each chapter's notebook and of
its scripts (gpt_train.py, gpt_generate.py, gpt_class_finetune.py, gpt_instruction_finetuning.py), with
``tensor``, ``manual_seed``, ``AdamW``, ``Linear``, ``save`` / ``load`` and ``get_encoding`` where the book
writes torch's and tiktoken's, and the attributes the book uses on what those calls return (``.to(device)``,
``.squeeze(0)``, ``.tolist()``, ``.flatten(0, 1)``, ``.unsqueeze(0)``, ``value_counts``, ``map``,
``to_csv``, ...). Small models; the figures the book prints where minigpt must give the same ones."""
import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt import functional as F
from minigpt.book import (GPT_CONFIG_124M, AdamW, DataLoader, GPTModel, InstructionDataset, Linear, SpamDataset, Table,
                          calc_accuracy_loader, calc_loss_batch, calc_loss_loader, classify_review,
                          create_balanced_dataset, create_dataloader_v1, custom_collate_draft_1,
                          custom_collate_draft_2, custom_collate_fn, download_and_load_file, download_and_load_gpt2,
                          format_input, generate, generate_text_simple, get_encoding, load, load_sms_spam,
                          load_weights_into_gpt, manual_seed, no_grad, plot_losses, plot_values, random_split, save,
                          tensor, text_to_token_ids, token_ids_to_text, train_classifier_simple, train_model_simple)
from minigpt.errors import MiniGPTError
from minigpt.gradcheck import gradcheck

FIXTURE = Path(__file__).parent / "fixtures" / "gpt2_tiny" / "base"  # a tiny GPT-2 in Hugging Face's layout
BOOK_INSTRUCTION_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch"
                        "/main/ch07/01_main-chapter-code/instruction-data.json")
device = "cpu"  # what the book's device probing gives on a machine without a GPU


@pytest.fixture
def tokenizer(shared_data):
    return get_encoding("gpt2")


@pytest.fixture
def verdict(shared_data):
    return (shared_data / "the-verdict" / "the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


# --- the Tensor methods the listings call ----------------------------------------------------------------
def test_tensor_methods_the_book_calls():
    t = tensor([[16833, 3626, 6100], [40, 1107, 588]])
    assert t.dtype == np.int64 and t.to(device) is t and t.numel() == 6
    assert t.flatten().tolist() == [16833, 3626, 6100, 40, 1107, 588]
    assert t[0].unsqueeze(0).shape == (1, 3) and t[:1].squeeze(0).tolist() == [16833, 3626, 6100]
    assert t.squeeze(0).shape == (2, 3)  # an axis longer than 1 stays, as in PyTorch
    x = tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.flatten(0, 1).shape == (6, 4) and x.flatten(1).shape == (2, 12) and x.flatten(-2, -1).shape == (2, 12)
    assert x.unsqueeze(-1).shape == (2, 3, 4, 1) and x.unsqueeze(1).squeeze().shape == (2, 3, 4)
    assert tensor(3.0).flatten().shape == (1,) and tensor(3.0).unsqueeze(0).shape == (1,)
    assert tensor(2.5).tolist() == 2.5 and tensor(2.5).squeeze().shape == ()
    with pytest.raises(MiniGPTError, match="flatten: start_dim .2. comes after end_dim .0."):
        x.flatten(2, 0)
    with pytest.raises(MiniGPTError, match="unsqueeze: dim 4 is out of range for 4 axes"):
        x.unsqueeze(4)
    with pytest.raises(MiniGPTError, match="squeeze: dim must be an integer"):
        x.squeeze(0.5)


@given(st.lists(st.integers(1, 3), min_size=0, max_size=3), st.data())
def test_flatten_unsqueeze_squeeze_gradients(shape, data):
    """The three are reshapes: their gradients checked by finite differences, in float64, 0-d included."""
    x = tensor(np.random.default_rng(0).standard_normal(shape), dtype=np.float64, requires_grad=True)
    n = len(shape)
    d = data.draw(st.integers(-n - 1, n), label="unsqueeze dim")
    if n:
        s = data.draw(st.integers(0, n - 1), label="start")
        e = data.draw(st.integers(s, n - 1), label="end")
    else:
        s, e = 0, -1
    w = np.random.default_rng(1).standard_normal(64)

    def f(a):
        y = a.unsqueeze(d).flatten(s, e).unsqueeze(0).squeeze(0).squeeze()
        return (y.flatten() * tensor(w[:y.numel()])).sum()

    assert gradcheck(f, x)["ok"]


# --- chapter 5 --------------------------------------------------------------------------------------------
def test_ch5_text_generation_loss_and_perplexity_as_printed(tokenizer):
    cfg = {**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2}
    manual_seed(123)
    model = GPTModel(cfg)
    model.eval()
    start_context = "Every effort moves you"
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    assert encoded.shape == (1, 4) and encoded.squeeze(0).tolist() == [6109, 3626, 6100, 345]
    token_ids = generate_text_simple(model=model, idx=encoded, max_new_tokens=10, context_size=cfg["context_length"])
    assert token_ids.shape == (1, 14) and token_ids_to_text(token_ids, tokenizer).startswith(start_context)

    # the book's own two helpers, typed as the chapter types them, run on minigpt's tensor too
    def book_text_to_token_ids(text, tokenizer):
        return tensor(tokenizer.encode(text, allowed_special={"<|endoftext|>"})).unsqueeze(0)

    def book_token_ids_to_text(token_ids, tokenizer):
        return tokenizer.decode(token_ids.squeeze(0).tolist())

    assert book_text_to_token_ids(start_context, tokenizer).tolist() == encoded.tolist()
    assert book_token_ids_to_text(encoded, tokenizer) == start_context

    inputs = tensor([[16833, 3626, 6100], [40, 1107, 588]])   # "every effort moves", "I really like"
    targets = tensor([[3626, 6100, 345], [1107, 588, 11311]])  # " effort moves you", " really like chocolate"
    with no_grad():
        logits = model(inputs)
    assert logits.shape == (2, 3, 50257) and targets.shape == (2, 3)
    assert token_ids_to_text(targets[0], tokenizer) == " effort moves you"
    logits_flat = logits.flatten(0, 1)
    targets_flat = targets.flatten()
    assert logits_flat.shape == (6, 50257) and targets_flat.shape == (6,)
    loss = F.cross_entropy(logits_flat, targets_flat)
    probas = logits.softmax(-1).data
    target_probas = probas[np.arange(2)[:, None], np.arange(3), targets.data]
    assert loss.item() == pytest.approx(-np.log(target_probas).mean(), rel=1e-5)
    assert loss.item() == pytest.approx(calc_loss_batch(inputs, targets, model, device).item(), rel=1e-6)
    assert loss.exp().item() == pytest.approx(np.exp(loss.item()), rel=1e-6)  # the perplexity


def test_ch5_gpt_train_script_flow(tokenizer, verdict, plt, tmp_path, capsys):
    """gpt_train.py's main(): model, AdamW, the two loaders, train_model_simple, the plot, then
    torch.save / torch.load of the state dict (here save / load)."""
    gpt_config = {**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2}
    settings = {"learning_rate": 5e-3, "num_epochs": 3, "batch_size": 2, "weight_decay": 0.1}
    text_data = verdict[:3000]
    manual_seed(123)
    model = GPTModel(gpt_config)
    model.to(device)
    optimizer = AdamW(model.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"])
    split_idx = int(0.90 * len(text_data))
    train_loader = create_dataloader_v1(text_data[:split_idx], batch_size=settings["batch_size"],
                                        max_length=gpt_config["context_length"], stride=gpt_config["context_length"],
                                        drop_last=True, shuffle=True, num_workers=0)
    val_loader = create_dataloader_v1(text_data[split_idx:], batch_size=settings["batch_size"],
                                      max_length=gpt_config["context_length"], stride=gpt_config["context_length"],
                                      drop_last=False, shuffle=False, num_workers=0)
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs=settings["num_epochs"], eval_freq=5,
        eval_iter=1, start_context="Every effort moves you", tokenizer=tokenizer)
    steps = settings["num_epochs"] * len(train_loader)
    assert len(train_losses) == len(val_losses) == len(tokens_seen) == (steps + 4) // 5
    assert tokens_seen[-1] == (5 * (len(train_losses) - 1) + 1) * 2 * 32
    assert train_losses[-1] < train_losses[0] - 2  # a random start (about 10.9) and a falling training loss
    out = capsys.readouterr().out
    assert out.count("Every effort moves you") == settings["num_epochs"]  # one sample per epoch
    assert "Ep 1 (Step 000000): Train loss" in out

    epochs_tensor = np.linspace(0, settings["num_epochs"], len(train_losses))  # the book: torch.linspace
    plot_losses(epochs_tensor, tokens_seen, train_losses, val_losses)
    plt.savefig(tmp_path / "loss.pdf")
    assert (tmp_path / "loss.pdf").stat().st_size > 0

    save(model.state_dict(), tmp_path / "model.pth")
    model2 = GPTModel(gpt_config)
    model2.load_state_dict(load(tmp_path / "model.pth", weights_only=True))
    model.eval(), model2.eval()
    ids = text_to_token_ids("Every effort moves you", tokenizer)
    with no_grad():
        assert np.array_equal(model(ids).data, model2(ids).data)


def test_ch5_download_and_load_gpt2_and_gpt_generate_flow(tmp_path, monkeypatch):
    """Section 5.5 and gpt_generate.py's main(): settings and params from a local folder, loaded into the
    book's model, generated from with top-k sampling."""
    models_dir = tmp_path / "gpt2"
    shutil.copytree(FIXTURE, models_dir / "124M")
    settings, params = download_and_load_gpt2(model_size="124M", models_dir=models_dir)
    assert settings == {"n_vocab": 97, "n_ctx": 32, "n_embd": 32, "n_head": 4, "n_layer": 2}
    assert sorted(params.keys()) == ["b", "blocks", "g", "wpe", "wte"] and params["wte"].shape == (97, 32)
    NEW_CONFIG = GPT_CONFIG_124M.copy()
    NEW_CONFIG.update({"vocab_size": 97, "emb_dim": 32, "n_layers": 2, "n_heads": 4})
    NEW_CONFIG.update({"context_length": 32, "qkv_bias": True, "drop_rate": 0.0})
    gpt = GPTModel(NEW_CONFIG)
    gpt.eval()
    load_weights_into_gpt(gpt, params)
    gpt.to(device)
    manual_seed(123)
    idx = tensor([[5, 17, 42]]).to(device)
    token_ids = generate(model=gpt, idx=idx, max_new_tokens=25, context_size=NEW_CONFIG["context_length"],
                         top_k=50, temperature=1.5)
    assert token_ids.shape == (1, 28) and token_ids[0, :3].tolist() == [5, 17, 42]
    assert token_ids.max() < 97

    # no files in models_dir/size: minigpt's checksummed GPT-2 download (here a stand-in, no network)
    calls = []

    def fake_fetch(name, size=None, no_verify=False):
        calls.append((name, size, no_verify))
        return FIXTURE

    monkeypatch.setattr("minigpt.book.ch05.fetch", fake_fetch)
    settings2, _ = download_and_load_gpt2(model_size="355M", models_dir=tmp_path / "elsewhere")
    download_and_load_gpt2(model_size="774M", models_dir=tmp_path / "elsewhere", no_verify=True)
    assert calls == [("gpt2", "355M", False), ("gpt2", "774M", True)] and settings2 == settings
    monkeypatch.undo()
    with pytest.raises(MiniGPTError, match="no sha256 is recorded .* pass --no-verify .no_verify=True."):
        download_and_load_gpt2(model_size="355M", models_dir=tmp_path / "elsewhere")  # refused before any download
    with pytest.raises(MiniGPTError, match="model_size must be one of 124M, 355M, 774M, 1558M, got '125M'"):
        download_and_load_gpt2(model_size="125M", models_dir=models_dir)


# --- chapter 6 --------------------------------------------------------------------------------------------
@pytest.fixture
def spam_csvs(shared_data, tmp_path, monkeypatch):
    """Section 6.2's steps as printed, in a scratch working folder: the balanced, mapped, split table
    written as train.csv / validation.csv / test.csv."""
    monkeypatch.chdir(tmp_path)
    df = load_sms_spam(shared_data / "sms-spam" / "SMSSpamCollection")
    assert df["Label"].value_counts() == {"ham": 4827, "spam": 747}  # the file's 5,574 messages
    balanced_df = create_balanced_dataset(df)
    assert balanced_df["Label"].value_counts() == {"ham": 747, "spam": 747}
    balanced_df["Label"] = balanced_df["Label"].map({"ham": 0, "spam": 1})
    assert balanced_df["Label"].value_counts() == {0: 747, 1: 747}
    train_df, validation_df, test_df = random_split(balanced_df, 0.7, 0.1)
    train_df.to_csv("train.csv", index=None)
    validation_df.to_csv("validation.csv", index=None)
    test_df.to_csv("test.csv", index=None)
    return train_df


def test_ch6_tables_csv_files_and_loaders_as_printed(tokenizer, spam_csvs):
    assert tokenizer.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert Path("train.csv").read_text(encoding="utf-8").startswith("Label,Text\n")
    train_dataset = SpamDataset(csv_file="train.csv", max_length=None, tokenizer=tokenizer)
    from_table = SpamDataset(csv_file=spam_csvs, max_length=None, tokenizer=tokenizer)
    assert train_dataset.max_length == from_table.max_length  # the CSV round trip keeps every text
    assert train_dataset.encoded_texts == from_table.encoded_texts
    val_dataset = SpamDataset(csv_file="validation.csv", max_length=train_dataset.max_length, tokenizer=tokenizer)
    test_dataset = SpamDataset(csv_file="test.csv", max_length=train_dataset.max_length, tokenizer=tokenizer)
    num_workers, batch_size = 0, 8
    manual_seed(123)
    train_loader = DataLoader(dataset=train_dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              drop_last=True)
    val_loader = DataLoader(dataset=val_dataset, batch_size=batch_size, num_workers=num_workers, drop_last=False)
    test_loader = DataLoader(dataset=test_dataset, batch_size=batch_size, num_workers=num_workers, drop_last=False)
    for input_batch, target_batch in train_loader:
        pass
    assert input_batch.shape == (8, train_dataset.max_length) and target_batch.shape == (8,)
    assert (len(train_loader), len(val_loader), len(test_loader)) == (130, 19, 38)  # the book's counts

    with pytest.raises(MiniGPTError, match="the value 'maybe' is not in the mapping"):
        Table({"Label": ["ham", "maybe"], "Text": ["a", "b"]})["Label"].map({"ham": 0, "spam": 1})
    with pytest.raises(MiniGPTError, match="to_csv writes no index column"):
        spam_csvs.to_csv("x.csv", index=True)
    assert not Path("x.csv").exists()


def test_ch6_classifier_head_training_and_saving_as_printed(tokenizer, spam_csvs, plt):
    """Sections 6.5-6.8 and gpt_class_finetune.py's test-mode model: freeze, a new head, unfreeze the last
    block and the final norm, accuracy and loss, train_classifier_simple, the plots, classify_review, then
    torch.save / torch.load of the classifier (here save / load)."""
    small = Table({k: v[:48] for k, v in spam_csvs.items()})  # a few examples: seconds, not minutes
    small.to_csv("train.csv", index=None)
    train_dataset = SpamDataset(csv_file="train.csv", max_length=None, tokenizer=tokenizer)
    manual_seed(123)
    train_loader = DataLoader(dataset=train_dataset, batch_size=8, shuffle=True, num_workers=0, drop_last=True)
    val_loader = DataLoader(dataset=train_dataset, batch_size=8, num_workers=0, drop_last=False)
    BASE_CONFIG = {"vocab_size": 50257, "context_length": 256, "drop_rate": 0.0, "qkv_bias": True,
                   "emb_dim": 32, "n_layers": 2, "n_heads": 2}
    model = GPTModel(BASE_CONFIG)
    model.eval()
    for param in model.parameters():
        param.requires_grad = False
    manual_seed(123)
    num_classes = 2
    model.out_head = Linear(in_features=BASE_CONFIG["emb_dim"], out_features=num_classes)
    model.to(device)
    for param in model.trf_blocks[-1].parameters():
        param.requires_grad = True
    for param in model.final_norm.parameters():
        param.requires_grad = True
    assert "out_head" in str(model)  # print(model) shows the new head

    inputs = tokenizer.encode("Do you have time")
    inputs = tensor(inputs).unsqueeze(0)
    assert inputs.tolist() == [[5211, 345, 423, 640]] and inputs.shape == (1, 4)
    with no_grad():
        outputs = model(inputs)
    assert outputs.shape == (1, 4, 2) and outputs[:, -1, :].shape == (1, 2)

    accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=10)
    assert 0 <= accuracy <= 1
    with no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=5)
    assert 0.3 < train_loss < 3

    frozen = model.tok_emb.weight.data.copy()
    head = model.out_head.weight.data.copy()
    manual_seed(123)
    optimizer = AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    num_epochs = 2
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs=num_epochs, eval_freq=2, eval_iter=5)
    assert examples_seen == num_epochs * 6 * 8 and len(train_accs) == len(val_accs) == num_epochs
    assert len(train_losses) == len(val_losses) == 6  # steps 0, 2, ..., 10 of 12
    assert np.array_equal(model.tok_emb.weight.data, frozen)  # frozen: untouched
    assert not np.array_equal(model.out_head.weight.data, head)  # the new head: trained
    for values, label in ((train_losses, "loss"), (train_accs, "accuracy")):
        epochs_tensor = np.linspace(0, num_epochs, len(values))  # the book: torch.linspace
        examples_seen_tensor = np.linspace(0, examples_seen, len(values))
        fig = plot_values(epochs_tensor, examples_seen_tensor, values, values, label=label)
        assert fig.axes[0].get_ylabel() == label.capitalize()

    text_1 = "You are a winner you have been specially selected to receive $1000 cash or a $2000 award."
    verdict = classify_review(text_1, model, tokenizer, device, max_length=train_dataset.max_length)
    assert verdict in ("spam", "not spam")

    save(model.state_dict(), "review_classifier.pth")
    model_state_dict = load("review_classifier.pth", map_location=device, weights_only=True)
    assert model_state_dict["out_head.weight"].shape == model.out_head.weight.shape
    fresh = GPTModel(BASE_CONFIG)
    fresh.out_head = Linear(in_features=BASE_CONFIG["emb_dim"], out_features=num_classes)
    fresh.load_state_dict(model_state_dict)
    fresh.eval()
    with no_grad():
        assert np.array_equal(fresh(inputs).data, model(inputs).data)
    assert classify_review(text_1, fresh, tokenizer, device, max_length=train_dataset.max_length) == verdict
    with pytest.raises(MiniGPTError, match="load_state_dict"):  # a model without the new head: said so
        GPTModel(BASE_CONFIG).load_state_dict(model_state_dict)


# --- chapter 7 --------------------------------------------------------------------------------------------
def test_ch7_data_prompt_and_collate_drafts_as_printed(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shared_file = shared_data / "instruction-data" / "instruction-data.json"
    data = download_and_load_file(shared_file, BOOK_INSTRUCTION_URL)  # present: only read
    assert len(data) == 1100
    assert data[50] == {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion",
                        "output": "The correct spelling is 'Occasion.'"}

    # absent: installed from the book's URL through minigpt's checksummed download (a stand-in here)
    monkeypatch.setattr("minigpt.book.ch07.fetch", lambda name, **kw: shared_file.parent)
    file_path = "instruction-data.json"
    assert download_and_load_file(file_path, BOOK_INSTRUCTION_URL) == data
    assert Path(file_path).read_bytes() == shared_file.read_bytes()
    Path(file_path).write_text(json.dumps(data[:1]), encoding="utf-8")  # an existing file is read, never replaced
    assert download_and_load_file(file_path, BOOK_INSTRUCTION_URL) == data[:1]
    with pytest.raises(MiniGPTError, match="is not a file minigpt knows"):
        download_and_load_file("other.json", "https://example.com/other.json")
    assert not Path("other.json").exists()

    model_input = format_input(data[50])
    desired_response = f"\n\n### Response:\n{data[50]['output']}"
    assert (model_input + desired_response).splitlines()[2:] == [
        "### Instruction:", "Identify the correct spelling of the following word.", "", "### Input:", "Ocassion",
        "", "### Response:", "The correct spelling is 'Occasion.'"]
    assert "### Input:" not in format_input(data[999])  # an entry without input has no input section

    train_portion = int(len(data) * 0.85)
    test_portion = int(len(data) * 0.1)
    train_data = data[:train_portion]
    test_data = data[train_portion:train_portion + test_portion]
    val_data = data[train_portion + test_portion:]
    assert (len(train_data), len(val_data), len(test_data)) == (935, 55, 110)  # the book's lengths

    batch = ([0, 1, 2, 3, 4], [5, 6], [7, 8, 9])
    assert custom_collate_draft_1(batch).tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256],
                                                      [7, 8, 9, 50256, 50256]]
    inputs, targets = custom_collate_draft_2(batch)
    assert inputs.tolist() == custom_collate_draft_1(batch).tolist()
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, 50256, 50256, 50256], [8, 9, 50256, 50256, 50256]]
    inputs, targets = custom_collate_fn(batch)
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]

    logits_1 = tensor([[-1.0, 1.0], [-0.5, 1.5]])
    targets_1 = tensor([0, 1])
    loss_1 = F.cross_entropy(logits_1, targets_1)
    logits_2 = tensor([[-1.0, 1.0], [-0.5, 1.5], [-0.5, 1.5]])
    loss_2 = F.cross_entropy(logits_2, tensor([0, 1, 1]))
    loss_3 = F.cross_entropy(logits_2, tensor([0, 1, -100]))
    assert round(loss_1.item(), 4) == 1.1269 and round(loss_2.item(), 4) == 0.7936  # the book's values
    assert loss_1.item() == loss_3.item()


def test_ch7_loaders_finetuning_and_responses_as_printed(tokenizer, shared_data, tmp_path, monkeypatch, plt):
    """Sections 7.3-7.7 and gpt_instruction_finetuning.py's main(): the partial collate, the loaders, a
    generated response cut out of the text, the loss, train_model_simple, the plot, the responses written to
    JSON and the model saved (a small model and a few short entries)."""
    monkeypatch.chdir(tmp_path)
    data = download_and_load_file(shared_data / "instruction-data" / "instruction-data.json", BOOK_INSTRUCTION_URL)
    customized_collate_fn = functools.partial(custom_collate_fn, device=device, allowed_max_length=1024)
    manual_seed(123)
    train_dataset = InstructionDataset(data[:935], tokenizer)
    train_loader = DataLoader(train_dataset, batch_size=8, collate_fn=customized_collate_fn, shuffle=True,
                              drop_last=True, num_workers=0)
    inputs, targets = next(iter(train_loader))
    assert inputs.shape == targets.shape and inputs.shape[0] == 8 and len(train_loader) == 935 // 8
    keep = targets[:, :-1] != -100  # targets are the inputs one ahead; padding after the first is masked
    assert np.array_equal(targets[:, :-1][keep], inputs[:, 1:][keep])
    for row in targets:
        n = int((row == -100).sum())
        assert (row[len(row) - n:] == -100).all() and (n == 0 or row[len(row) - n - 1] == 50256)
    assert (targets == -100).any()

    short = sorted(data, key=lambda e: len(format_input(e)) + len(e["output"]))[:24]
    train_data, val_data, test_data = short[:16], short[16:20], [dict(e) for e in short[20:]]
    collate = functools.partial(custom_collate_fn, device=device, allowed_max_length=64)
    manual_seed(123)
    train_loader = DataLoader(InstructionDataset(train_data, tokenizer), batch_size=4, collate_fn=collate,
                              shuffle=True, drop_last=True, num_workers=0)
    val_loader = DataLoader(InstructionDataset(val_data, tokenizer), batch_size=4, collate_fn=collate,
                            shuffle=False, drop_last=False, num_workers=0)
    BASE_CONFIG = {"vocab_size": 50257, "context_length": 128, "drop_rate": 0.0, "qkv_bias": True,
                   "emb_dim": 32, "n_layers": 2, "n_heads": 2}
    manual_seed(123)
    model = GPTModel(BASE_CONFIG)
    model.eval()
    input_text = format_input(val_data[0])
    token_ids = generate(model=model, idx=text_to_token_ids(input_text, tokenizer), max_new_tokens=5,
                         context_size=BASE_CONFIG["context_length"], eos_id=50256)
    generated_text = token_ids_to_text(token_ids, tokenizer)
    response_text = generated_text[len(input_text):].replace("### Response:", "").strip()
    assert generated_text.startswith(input_text) and isinstance(response_text, str)

    model.to(device)
    with no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=5)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=5)
    assert 10 < train_loss < 12 and 10 < val_loss < 12  # about ln(50257) = 10.8 before training
    manual_seed(123)
    optimizer = AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    num_epochs = 3
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs=num_epochs, eval_freq=5, eval_iter=5,
        start_context=format_input(val_data[0]), tokenizer=tokenizer)
    assert len(train_losses) == 3 and train_losses[-1] < train_losses[0] - 1
    epochs_tensor = np.linspace(0, num_epochs, len(train_losses))
    plot_losses(epochs_tensor, tokens_seen, train_losses, val_losses)

    for i, entry in enumerate(test_data):
        input_text = format_input(entry)
        token_ids = generate(model=model, idx=text_to_token_ids(input_text, tokenizer).to(device),
                             max_new_tokens=8, context_size=BASE_CONFIG["context_length"], eos_id=50256)
        generated_text = token_ids_to_text(token_ids, tokenizer)
        test_data[i]["model_response"] = generated_text[len(input_text):].replace("### Response:", "").strip()
    with open("instruction-data-with-response.json", "w") as file:
        json.dump(test_data, file, indent=4)
    assert all("model_response" in e for e in json.loads(Path("instruction-data-with-response.json").read_text()))

    CHOOSE_MODEL = "gpt2-medium (355M)"
    file_name = f"{re.sub(r'[ ()]', '', CHOOSE_MODEL)}-sft.pth"
    save(model.state_dict(), file_name)
    assert file_name == "gpt2-medium355M-sft.pth"
    assert load(file_name).keys() == model.state_dict().keys()
