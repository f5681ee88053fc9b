"""Sliding-window dataset, train/val split, the resumable DataLoader, text loading and the default corpus."""
import itertools
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minigpt.data import (DataLoader, SlidingWindowDataset, default_corpus, load_texts, shared_data_dir,
                          shared_file, train_val_split)
from minigpt.errors import MiniGPTError


# --- SlidingWindowDataset ------------------------------------------------------------------------------
def _book_windows(ids, L, stride):
    """The book's GPTDatasetV1 loop, as the reference."""
    xs, ys = [], []
    for i in range(0, len(ids) - L, stride):
        xs.append(ids[i:i + L])
        ys.append(ids[i + 1:i + L + 1])
    return xs, ys


@given(st.integers(2, 120), st.integers(1, 20), st.integers(1, 25))
def test_windows_match_the_book_loop(n, L, stride):
    ids = np.arange(100, 100 + n, dtype=np.int32)
    if n < L + 1:
        with pytest.raises(MiniGPTError, match=f"{n} tokens"):
            SlidingWindowDataset(ids, L, stride)
        return
    ds = SlidingWindowDataset(ids, L, stride)
    xs, ys = _book_windows(list(ids), L, stride)
    assert len(ds) == len(xs)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == np.int64 and y.dtype == np.int64
        assert list(x) == xs[i] and list(y) == ys[i]
    X, Y = ds.get_batch(np.arange(len(ds))[::-1])
    assert X.shape == (len(ds), L) and X.dtype == np.int64 and X.flags.c_contiguous
    np.testing.assert_array_equal(X, np.array(xs[::-1]))
    np.testing.assert_array_equal(Y, np.array(ys[::-1]))


def test_dataset_errors():
    with pytest.raises(MiniGPTError, match="5 tokens.*max_length=8.*at least 9"):
        SlidingWindowDataset(np.arange(5), 8, 1)
    with pytest.raises(MiniGPTError, match="max_length"):
        SlidingWindowDataset(np.arange(50), 0, 1)
    with pytest.raises(MiniGPTError, match="stride"):
        SlidingWindowDataset(np.arange(50), 4, 0)
    with pytest.raises(MiniGPTError, match="1-D"):
        SlidingWindowDataset(np.zeros((4, 4), int), 2, 1)
    with pytest.raises(MiniGPTError, match="integer"):
        SlidingWindowDataset(np.linspace(0, 1, 20), 2, 1)
    ds = SlidingWindowDataset(np.arange(20), 4, 4)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(MiniGPTError, match="out of range"):
        ds.get_batch([0, len(ds)])
    assert SlidingWindowDataset(np.arange(20), 4).stride == 4  # stride defaults to max_length


def test_the_verdict_windows_like_the_book(shared_data):
    text = (shared_data / "the-verdict" / "the-verdict.txt").read_text(encoding="utf-8")
    ids = np.frombuffer(text.encode("ascii"), dtype=np.uint8)  # any id sequence: bytes here
    train, val = train_val_split(ids, 0.1)
    assert train.size + val.size == ids.size == 20479
    assert train.size == 20479 - round(20479 * 0.1)
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    ds = SlidingWindowDataset(train, 256, 256)
    assert len(ds) == len(range(0, train.size - 256, 256))


# --- split ---------------------------------------------------------------------------------------------
def test_train_val_split():
    ids = np.arange(100)
    tr, va = train_val_split(ids, 0.1)
    np.testing.assert_array_equal(tr, np.arange(90))
    np.testing.assert_array_equal(va, np.arange(90, 100))
    tr, va = train_val_split(ids, 0.0)
    assert tr.size == 100 and va.size == 0
    for bad in (-0.1, 1.0, 1.5, "0.1", True):
        with pytest.raises(MiniGPTError, match="val_fraction"):
            train_val_split(ids, bad)
    with pytest.raises(MiniGPTError, match="validation part.*10 tokens.*at least 33"):
        train_val_split(ids, 0.1, min_val_tokens=33)
    with pytest.raises(MiniGPTError, match="no training tokens"):
        train_val_split(np.arange(1), 0.9)


# --- DataLoader ----------------------------------------------------------------------------------------
def _loader(n_tokens=203, L=4, stride=3, **kw):
    return DataLoader(SlidingWindowDataset(np.arange(n_tokens), L, stride), **kw)


def test_loader_batches_shapes_len_and_drop_last():
    dl = _loader(batch_size=5)
    n = len(dl.dataset)
    assert len(dl) == n // 5
    batches = list(dl)
    assert len(batches) == len(dl)
    for x, y in batches:
        assert x.shape == (5, 4) and y.shape == (5, 4) and x.dtype == np.int64
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    keep = _loader(batch_size=5, drop_last=False)
    assert len(keep) == -(-n // 5)
    sizes = [x.shape[0] for x, _ in keep]
    assert sum(sizes) == n and sizes[-1] == n - 5 * (len(keep) - 1)
    with pytest.raises(MiniGPTError, match="fewer than batch_size"):
        _loader(n_tokens=20, batch_size=64)
    with pytest.raises(MiniGPTError, match="batch_size"):
        _loader(batch_size=0)


def test_shuffle_is_seeded_per_epoch_and_covers_every_window():
    dl = _loader(batch_size=4, shuffle=True, seed=7, drop_last=False)
    e0 = np.concatenate([x[:, 0] for x, _ in dl])
    e1 = np.concatenate([x[:, 0] for x, _ in dl])
    assert dl.epoch == 2
    starts = np.arange(len(dl.dataset)) * 3
    assert sorted(e0) == sorted(e1) == list(starts)
    assert not np.array_equal(e0, e1)
    same = _loader(batch_size=4, shuffle=True, seed=7, drop_last=False)
    np.testing.assert_array_equal(np.concatenate([x[:, 0] for x, _ in same]), e0)
    np.testing.assert_array_equal(dl.order(0), np.random.default_rng((7, 0)).permutation(len(dl.dataset)))
    other = _loader(batch_size=4, shuffle=True, seed=8, drop_last=False)
    assert not np.array_equal(np.concatenate([x[:, 0] for x, _ in other]), e0)
    plain = _loader(batch_size=4)
    np.testing.assert_array_equal(np.concatenate([x[:, 0] for x, _ in plain]), starts[:len(plain) * 4])


def _take_epochs(dl, epochs):
    out = []
    for _ in range(epochs):
        out.extend(x.copy() for x, _ in dl)
    return out


@pytest.mark.parametrize("cut", [0, 1, 7, 12, 13, 30])
def test_resume_in_epoch_loops_yields_the_uninterrupted_batches(cut):
    uninterrupted = _take_epochs(_loader(batch_size=5, shuffle=True, seed=3), 3)  # 13 batches per epoch
    dl = _loader(batch_size=5, shuffle=True, seed=3)
    seen, state = [], None
    for _ in range(3):
        for x, _ in dl:
            if len(seen) == cut:
                break
            seen.append(x.copy())
            state = json.loads(json.dumps(dl.state_dict()))  # checkpointed after each step
        if len(seen) == cut:
            break
    resumed = _loader(batch_size=5, shuffle=True, seed=3)
    if state is not None:
        resumed.load_state_dict(state)
    while len(seen) < len(uninterrupted):
        for x, _ in resumed:
            seen.append(x.copy())
            if len(seen) == len(uninterrupted):
                break
    for a, b in zip(seen, uninterrupted):
        np.testing.assert_array_equal(a, b)


def test_batches_stream_rolls_over_epochs_and_survives_interruption():
    dl = _loader(batch_size=5, shuffle=True, seed=11)
    reference = _take_epochs(_loader(batch_size=5, shuffle=True, seed=11), 3)
    got = [x.copy() for x, _ in itertools.islice(dl.batches(), 10)]
    got += [x.copy() for x, _ in itertools.islice(dl.iterate_forever(), 10)]  # continues, not restarts
    state = dl.state_dict()
    assert state["epoch"] == 1 and state["position"] == 20 - len(dl)
    fresh = _loader(batch_size=5, shuffle=True, seed=11)
    fresh.load_state_dict(state)
    got += [x.copy() for x, _ in itertools.islice(fresh.batches(), len(reference) - 20)]
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)


def test_leaving_an_epoch_loop_early_restarts_that_epoch_for_evaluation():
    dl = _loader(batch_size=5)
    first = [x.copy() for x, _ in itertools.islice(iter(dl), 3)]
    for i, (x, _) in enumerate(dl):  # the book's calc_loss_loader pattern: first k batches, then break
        if i == 3:
            break
        np.testing.assert_array_equal(x, first[i])
    again = [x.copy() for x, _ in dl.iter_epoch(0, max_batches=3)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert dl.state_dict()["position"] == 0


def test_loader_state_errors():
    dl = _loader(batch_size=5, shuffle=True, seed=1)
    with pytest.raises(MiniGPTError, match="epoch"):
        dl.load_state_dict({"foo": 1})
    with pytest.raises(MiniGPTError, match="out of range"):
        dl.load_state_dict({"epoch": 0, "position": 999})
    with pytest.raises(MiniGPTError, match="seed=2"):
        dl.load_state_dict({**dl.state_dict(), "seed": 2})


def test_loader_stacks_items_of_datasets_without_get_batch():
    class Pairs:
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return np.array([i, i]), np.int64(i % 2)

    xs, ys = next(iter(DataLoader(Pairs(), batch_size=4)))
    np.testing.assert_array_equal(xs, [[0, 0], [1, 1], [2, 2], [3, 3]])
    np.testing.assert_array_equal(ys, [0, 1, 0, 1])


# --- text sources --------------------------------------------------------------------------------------
def test_load_texts(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first doc", encoding="utf-8")
    b.write_bytes("\ufeffsecond d\u00f6c".encode("utf-8"))
    assert load_texts([a, b]) == "first doc<|endoftext|>second d\u00f6c"
    assert load_texts(str(a)) == "first doc"
    assert load_texts([a, b], separator="\n") == "first doc\nsecond d\u00f6c"
    with pytest.raises(MiniGPTError, match="not found: .*missing.txt"):
        load_texts([a, tmp_path / "missing.txt"])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(MiniGPTError, match="latin1.txt is not UTF-8"):
        load_texts([bad])
    with pytest.raises(MiniGPTError, match="directory"):
        load_texts([tmp_path])
    with pytest.raises(MiniGPTError, match="no text files"):
        load_texts([])


def test_shared_data_helpers_are_exported(shared_data):
    assert shared_data_dir() == shared_data
    assert shared_file("the-verdict/the-verdict.txt").stat().st_size == 20479
    assert shared_file("no/such/file") is None


# --- default corpus ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINIGPT_CACHE", str(d))
    yield d
    mp.undo()


def test_default_corpus_is_english_prose_and_cached(corpus_cache):
    from minigpt.data.corpus import build_default_corpus, corpus_cache_path

    text = default_corpus()
    assert 1_000_000 < len(text) < 3_500_000
    docs = text.split("<|endoftext|>")
    assert len(docs) > 300 and all(d.strip() for d in docs)
    ascii_share = sum(c.isascii() for c in text) / len(text)
    assert ascii_share > 0.999
    letters = sum(c.isalpha() or c == " " for c in text) / len(text)
    assert letters > 0.75  # prose, not code
    for word in (" the ", " return", " file", " string"):
        assert text.count(word) > 500
    assert "Return" in text
    path = corpus_cache_path()
    assert path.parent == corpus_cache and path.exists()
    # the cache is used: a second call reads the file (made recognisable here)
    body = path.read_bytes().partition(b"\n")[2]
    assert body.decode("utf-8") == text
    # deterministic: rebuilding gives the same text
    assert build_default_corpus() == text
    assert default_corpus(separator="\n\n") == text.replace("<|endoftext|>", "\n\n")


def test_default_corpus_cache_is_reused_and_a_bad_cache_is_rebuilt(corpus_cache, monkeypatch):
    import hashlib

    from minigpt.data import corpus

    default_corpus()  # make sure a good cache exists
    builds = []
    monkeypatch.setattr(corpus, "build_default_corpus", lambda: builds.append(1) or "rebuilt text")
    assert default_corpus() != "rebuilt text" and builds == []  # the cache is reused
    path = corpus.corpus_cache_path()
    body = b"cached text"
    header = f"# minigpt default corpus v{corpus.FORMAT_VERSION} sha256={hashlib.sha256(body).hexdigest()}\n"
    path.write_bytes(header.encode() + body)
    assert default_corpus() == "cached text" and builds == []
    path.write_bytes(header.encode() + b"tampered")  # the checksum no longer matches: rebuilt
    assert default_corpus() == "rebuilt text" and builds == [1]
    assert default_corpus() == "rebuilt text" and builds == [1]  # and the rebuilt text was cached
    path.write_bytes(b"\xff\xfe garbage")
    assert default_corpus() == "rebuilt text" and builds == [1, 1]
    assert default_corpus(cache=False) == "rebuilt text" and builds == [1, 1, 1]
    assert not list(corpus_cache.glob("*.tmp"))  # atomic writes leave no temp files behind
