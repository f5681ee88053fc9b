"""Chapter 6, *Fine-tuning for classification*: the spam data, SpamDataset, accuracy, the training loop.

The book keeps its tables in pandas DataFrames; minigpt has no pandas, so a table here is a ``Table``: a
dict of equal-length columns, ``{"Label": [...], "Text": [...]}``, with the three pandas calls the chapter
makes on its tables: ``df["Label"].value_counts()``, ``df["Label"].map({"ham": 0, "spam": 1})`` and
``df.to_csv("train.csv", index=None)`` (``load_sms_spam`` reads the SMS Spam Collection into one; a plain
dict or a pandas DataFrame with those columns works as input as well). The book's steps then read the same:
``create_balanced_dataset(df)``, ``random_split(df, 0.7, 0.1)``, ``SpamDataset("train.csv", tokenizer)``.

How minigpt's native API differs, and why: ``minigpt finetune classify`` (``GPTClassifier``) reads each
row's last REAL token and pads each batch only to its longest row, so a text's prediction never depends on
the padding beside it, and splits the data stratified by class; the book pads every text to the longest
training text and reads the LAST position, which here is usually padding (the model learns to read
through it), and splits without stratifying. ``minigpt.book`` follows the book.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from ..data.classification import ClassificationDataset, balance, read_labelled
from ..errors import MiniGPTError
from ..io import atomic_write_text
from ..tensor import Tensor, no_grad
from .ch04 import _ids
from .ch05 import calc_loss_batch, calc_loss_loader, evaluate_model

__all__ = ["Table", "Column", "load_sms_spam", "create_balanced_dataset", "random_split", "SpamDataset",
           "calc_accuracy_loader", "calc_loss_batch", "calc_loss_loader", "evaluate_model", "train_classifier_simple",
           "classify_review", "plot_values"]


class Column(list):
    """A table's column: a list, with the two pandas Series calls chapter 6 makes on one."""

    def map(self, arg) -> "Column":
        """Each value looked up in the dict ``arg`` (or passed to the function ``arg``): the book's
        ``balanced_df["Label"].map({"ham": 0, "spam": 1})``. A value the dict lacks is an error naming it
        (pandas would put NaN there)."""
        if isinstance(arg, dict):
            missing = next((v for v in self if v not in arg), _NOTHING)
            if missing is not _NOTHING:
                raise MiniGPTError(f"map: the value {missing!r} is not in the mapping (keys: "
                                   f"{', '.join(map(repr, arg))})")
            return Column(arg[v] for v in self)
        if callable(arg):
            return Column(arg(v) for v in self)
        raise MiniGPTError(f"map expects a dict or a function, got {type(arg).__name__}")

    def value_counts(self) -> dict:
        """How often each value occurs, the most frequent first: ``{"ham": 4825, "spam": 747}``."""
        counts: dict = {}
        for v in self:
            counts[v] = counts.get(v, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


_NOTHING = object()


class Table(dict):
    """A table: a dict of equal-length columns (each a ``Column``), ``{"Label": [...], "Text": [...]}``, where
    the book has a pandas DataFrame. ``table["Label"] = values`` replaces a column; ``to_csv`` writes it."""

    def __init__(self, columns=()):
        super().__init__()
        for k, v in dict(columns).items():
            self[k] = v

    def __setitem__(self, key, values):
        super().__setitem__(key, Column(values))

    def to_csv(self, path, index=None) -> None:
        """The table as a CSV file with a header row (``Label,Text``), as the book's
        ``train_df.to_csv("train.csv", index=None)``; ``SpamDataset("train.csv", ...)`` reads it back. No
        index column is written (the book passes ``index=None``). An existing file is replaced, as pandas
        does, atomically."""
        if index:
            raise MiniGPTError("to_csv writes no index column: pass index=None, as the book does")
        cols = _columns(self)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(list(cols))
        w.writerows(zip(*cols.values()))
        atomic_write_text(path, buf.getvalue())


def _columns(df) -> dict:
    """A dict-of-lists view of a table (a dict of columns, or a pandas DataFrame)."""
    if isinstance(df, dict):
        cols = {k: list(v) for k, v in df.items()}
    elif hasattr(df, "columns") and hasattr(df, "to_dict"):
        cols = {k: list(df[k]) for k in df.columns}
    else:
        raise MiniGPTError(f"expected a table: a dict of columns like {{'Label': [...], 'Text': [...]}}, got "
                           f"{type(df).__name__}")
    for need in ("Label", "Text"):
        if need not in cols:
            raise MiniGPTError(f"the table has no column {need!r} (columns: {', '.join(map(str, cols))})")
    if len({len(v) for v in cols.values()}) > 1:
        raise MiniGPTError("the table's columns have different lengths")
    return cols


def _take(cols: dict, idx) -> Table:
    return Table({k: [v[int(i)] for i in idx] for k, v in cols.items()})


def load_sms_spam(path) -> Table:
    """The SMS Spam Collection file (``label<TAB>text`` per line) as a table {"Label": [...], "Text": [...]}
    with the labels as written ("ham" / "spam"). The book reads the same file with
    ``pd.read_csv(path, sep="\\t", header=None, names=["Label", "Text"])``."""
    texts, labels, _ = read_labelled(path, fmt="sms")
    return Table({"Label": labels, "Text": texts})


def create_balanced_dataset(df) -> Table:
    """As many "ham" rows as there are "spam" rows (a seeded sample), plus every "spam" row. minigpt's
    ``balance`` does the sampling (seed 123, as the book's ``random_state=123``; the rows chosen differ from
    pandas' sample)."""
    cols = _columns(df)
    return _take(cols, balance(cols["Label"], seed=123))


def random_split(df, train_frac: float, validation_frac: float):
    """Shuffle the rows (seed 123) and cut them into train / validation / test: the first
    ``int(n * train_frac)`` rows, the next ``int(n * validation_frac)``, the rest. (minigpt's
    ``stratified_split`` keeps each class's share in every part; the book's split does not.)"""
    cols = _columns(df)
    n = len(cols["Label"])
    if not (0 <= train_frac and 0 <= validation_frac and train_frac + validation_frac <= 1):
        raise MiniGPTError(f"random_split: fractions must be >= 0 and add up to at most 1, got {train_frac}, "
                           f"{validation_frac}")
    order = np.random.default_rng(123).permutation(n)
    train_end = int(n * train_frac)
    val_end = train_end + int(n * validation_frac)
    return _take(cols, order[:train_end]), _take(cols, order[train_end:val_end]), _take(cols, order[val_end:])


class SpamDataset(ClassificationDataset):
    """The book's dataset: every text encoded and padded with ``pad_token_id`` to ``max_length`` tokens (the
    longest text's length when None; longer texts are cut); ``dataset[i]`` is ``(ids, label)``.

    ``csv_file`` is a table (see the module docstring) whose "Label" column holds integer class ids (the
    book maps "ham" -> 0, "spam" -> 1 first), or a CSV file with a header row "Label,Text" as the book
    writes with ``to_csv``. Built on minigpt's ``ClassificationDataset`` (which pads each batch only to
    its longest row); this one pads to ``max_length``, as the book.
    """

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id: int = 50256):
        if isinstance(csv_file, dict) or hasattr(csv_file, "columns"):
            cols = _columns(csv_file)
            texts, labels = cols["Text"], cols["Label"]
        else:
            texts, labels, _ = read_labelled(csv_file, fmt="csv", text_column="Text", label_column="Label")
        try:
            label_ids = [int(lab) for lab in labels]
        except (TypeError, ValueError):
            raise MiniGPTError(f"SpamDataset: labels must be class ids (0, 1, ...), got {labels[0]!r}; map them "
                               "first, as the book does with {'ham': 0, 'spam': 1}") from None
        encoded = [tokenizer.encode(t) for t in texts]
        self.max_length = max(len(e) for e in encoded) if max_length is None else int(max_length)
        super().__init__(encoded, label_ids, self.max_length, pad_token_id)
        self.encoded_texts = [list(e[:self.max_length]) + [pad_token_id] * (self.max_length - len(e[:self.max_length]))
                              for e in encoded]

    def __getitem__(self, index):
        return np.asarray(self.encoded_texts[index], dtype=np.int64), self.labels[index]

    def get_batch(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        return np.asarray([self.encoded_texts[int(i)] for i in idx], dtype=np.int64), self.labels[idx]

    def _longest_encoded_length(self) -> int:
        return self.max_length


def calc_accuracy_loader(data_loader, model, device=None, num_batches=None) -> float:
    """Share of correct predictions (argmax of the LAST position's logits) over the first ``num_batches``
    batches (all when None). Leaves the model in eval mode, as the book's function does."""
    model.eval()
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    correct = seen = 0
    with no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i >= n:
                break
            logits = model(input_batch)[:, -1, :].data  # (B, n_classes)
            predicted = logits.argmax(axis=-1)
            seen += predicted.shape[0]
            correct += int((predicted == np.asarray(target_batch)).sum())
    return correct / seen


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter):
    """The book's classification loop: like ``train_model_simple`` (losses every ``eval_freq`` steps) plus
    the train and validation accuracy over ``eval_iter`` batches after each epoch. Returns
    ``(train_losses, val_losses, train_accs, val_accs, examples_seen)``."""
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            examples_seen += np.asarray(input_batch).shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter)
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | ", end="")
        print(f"Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def classify_review(text: str, model, tokenizer, device=None, max_length=None, pad_token_id: int = 50256) -> str:
    """"spam" or "not spam" for one text: encoded, cut to ``max_length`` (and the model's context), padded
    to ``max_length``, classified by the last position's logits (class 1 is spam)."""
    model.eval()
    input_ids = tokenizer.encode(text)
    supported = model.pos_emb.weight.shape[0]
    if max_length is None:
        max_length = supported
    input_ids = input_ids[:min(max_length, supported)]
    input_ids += [pad_token_id] * (max_length - len(input_ids))
    with no_grad():
        logits = model(_ids(np.asarray(input_ids, dtype=np.int64)))[:, -1, :]
    predicted = int(np.argmax(logits.data if isinstance(logits, Tensor) else logits, axis=-1)[0])
    return "spam" if predicted == 1 else "not spam"


def plot_values(epochs_seen, examples_seen, train_values, val_values, label: str = "loss"):
    """Training and validation ``label`` against epochs and examples seen; shows and returns the figure
    (nothing is written; the book also saves ``{label}-plot.pdf``). Needs matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise MiniGPTError("plot_values needs matplotlib: pip install matplotlib") from None
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_values, label=f"Training {label}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(label.capitalize())
    ax1.legend()
    ax2 = ax1.twiny()
    ax2.plot(examples_seen, train_values, alpha=0)
    ax2.set_xlabel("Examples seen")
    fig.tight_layout()
    plt.show()
    return fig
