"""Data sets by name (`--data sms-spam`, `--text the-verdict`, `read_labelled("sms-spam")`): looked up in
$MINIGPT_DATA, then the download cache, then ../shared/data; a path that exists wins; a missing data set
names the command that installs it."""
import json

import pytest

import minigpt.data.shared as shared
from minigpt import MiniGPTError
from minigpt.cli import main
from minigpt.data import dataset_names, dataset_path, load_texts
from minigpt.data.classification import read_labelled
from minigpt.data.instruct import read_instructions

# name -> (path in the shared-data layout, path in the download cache)
LAYOUT = {"the-verdict": ("the-verdict/the-verdict.txt", "the-verdict/the-verdict.txt"),
          "sms-spam": ("sms-spam/SMSSpamCollection", "sms-spam/SMSSpamCollection"),
          "instruction-data": ("instruction-data/instruction-data.json", "instruction-data/instruction-data.json"),
          "tiny-shakespeare": ("tinyshakespeare/input.txt", "tiny-shakespeare/input.txt")}


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Three empty places (MINIGPT_DATA, the cache, a local ../shared/data) and a neutral working folder."""
    env, cache, local = tmp_path / "env", tmp_path / "cache", tmp_path / "local"
    for d in (env, cache, local):
        d.mkdir()
    monkeypatch.setenv("MINIGPT_DATA", str(env))
    monkeypatch.setenv("MINIGPT_CACHE", str(cache))
    monkeypatch.setattr(shared, "_local_data_dirs", lambda: [local])
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return env, cache, local


def _put(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_names_are_the_manifests_data_sets():
    from minigpt.download import load_manifest

    entries = load_manifest()["entries"]
    assert dataset_names() == ["the-verdict", "sms-spam", "instruction-data", "tiny-shakespeare"]
    for name, (shared_rel, cache_rel) in LAYOUT.items():
        first = entries[name]["files"][0]
        assert first["shared"] == shared_rel and f"{name}/{first['name']}" == cache_rel


@pytest.mark.parametrize("name", [*LAYOUT, "tinyshakespeare"])
def test_names_resolve_from_env_then_cache_then_local(places, name):
    env, cache, local = places
    shared_rel, cache_rel = LAYOUT[shared.ALIASES.get(name, name)]
    in_local = _put(local / shared_rel, "local")
    assert dataset_path(name) == in_local
    in_cache = _put(cache / cache_rel, "cache")
    assert dataset_path(name) == in_cache
    in_env = _put(env / shared_rel, "env")
    assert dataset_path(name) == in_env
    in_env.unlink()
    assert dataset_path(name) == in_cache
    in_cache.unlink()
    assert dataset_path(name) == in_local


def test_minigpt_data_may_hold_the_cache_layout_too(places):
    env, _, _ = places
    f = _put(env / "tiny-shakespeare" / "input.txt", "env, cache layout")
    assert dataset_path("tiny-shakespeare") == f


def test_an_existing_path_wins_and_other_paths_pass_through(places):
    own = _put(places[0].parent / "cwd" / "sms-spam", "ham\thello\nspam\twin\n")
    _put(places[1] / "sms-spam" / "SMSSpamCollection", "cache")
    assert dataset_path("sms-spam").resolve() == own.resolve()   # ./sms-spam, not the cached data set
    assert dataset_path("no/such/file.txt").as_posix() == "no/such/file.txt"
    with pytest.raises(MiniGPTError, match="data file no/such/file.txt does not exist"):
        read_labelled("no/such/file.txt")


@pytest.mark.parametrize("name", list(LAYOUT))
def test_a_missing_data_set_names_the_command_that_fetches_it(places, name):
    with pytest.raises(MiniGPTError) as e:
        dataset_path(name)
    msg = str(e.value)
    assert "\n" not in msg and f"`minigpt download {name}`" in msg and f"minigpt download {name} --from DIR" in msg


def test_readers_take_names(places):
    env = places[0]
    _put(env / LAYOUT["sms-spam"][0], "ham\tsee you\nspam\tWIN now\n")
    _put(env / LAYOUT["instruction-data"][0], json.dumps([{"instruction": "Say hi.", "input": "", "output": "hi"}]))
    _put(env / LAYOUT["the-verdict"][0], "I had always thought")
    assert read_labelled("sms-spam")[:2] == (["see you", "WIN now"], ["ham", "spam"])
    assert read_instructions("instruction-data")[0]["output"] == "hi"
    assert load_texts(["the-verdict", "the-verdict"], separator="|") == "I had always thought|I had always thought"


def test_cli_missing_data_set_is_one_line_before_any_work(places, tmp_path, capsys):
    code = main(["finetune", "classify", "--init", str(tmp_path / "no-model"), "--data", "sms-spam",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("minigpt: error: data set sms-spam is not installed")
    assert "`minigpt download sms-spam`" in err
    assert not (tmp_path / "o").exists()
    code = main(["train", "--text", "tinyshakespeare", "--config", "nano", "--out", str(tmp_path / "t"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "minigpt download tiny-shakespeare" in err and err.count("\n") == 1


def test_cli_honours_minigpt_data(places, tmp_path, capsys):
    env = places[0]
    _put(env / LAYOUT["the-verdict"][0], "The quick brown fox jumps over the lazy dog. " * 200)
    out = tmp_path / "run"
    assert main(["train", "--text", "the-verdict", "--config", "nano", "--context-length", "16", "--vocab-size",
                 "270", "--steps", "1", "--batch-size", "2", "--eval-batches", "1", "--sample-tokens", "1",
                 "--out", str(out), "--quiet"]) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    assert main(["tokenizer", "train", "--text", "the-verdict", "--vocab-size", "260", "--out",
                 str(tmp_path / "tok.json"), "--quiet"]) == 0
    assert "trained 260 tokens" in capsys.readouterr().err


def test_download_from_a_local_copy_then_use_the_name(shared_data, tmp_path, monkeypatch, capsys):
    """`minigpt download NAME --from DIR`, then `--text NAME` / `--data NAME`, offline, from the cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINIGPT_CACHE", str(cache))
    monkeypatch.delenv("MINIGPT_DATA", raising=False)
    monkeypatch.setattr(shared, "_local_data_dirs", lambda: [tmp_path / "nowhere"])
    for name, use in (("the-verdict", "minigpt train --text the-verdict"),
                      ("sms-spam", "minigpt finetune classify --data sms-spam")):
        with pytest.raises(MiniGPTError, match=f"minigpt download {name}"):
            dataset_path(name)
        assert main(["download", name, "--from", str(shared_data)]) == 0
        assert f"use it by name: {use} ..." in capsys.readouterr().err
    assert main(["download", "the-verdict", "--from", str(shared_data), "--cache-dir", str(tmp_path / "elsewhere")]) == 0
    assert "use it by name" not in capsys.readouterr().err  # a name finds only the cache folder
    assert dataset_path("sms-spam") == cache / "sms-spam" / "SMSSpamCollection"

    run = tmp_path / "pre"
    assert main(["train", "--text", "the-verdict", "--config", "nano", "--context-length", "32", "--vocab-size",
                 "280", "--steps", "2", "--batch-size", "2", "--eval-batches", "1", "--sample-tokens", "1",
                 "--out", str(run)]) == 0
    assert f"corpus: {cache / 'the-verdict' / 'the-verdict.txt'}, 20,479 characters" in capsys.readouterr().err

    clf = tmp_path / "spam"
    assert main(["finetune", "classify", "--init", str(run), "--data", "sms-spam", "--epochs", "0.01",
                 "--out", str(clf)]) == 0
    err = capsys.readouterr().err
    assert f"data: {cache / 'sms-spam' / 'SMSSpamCollection'}: 5,574 examples (ham 4,827, spam 747)" in err
    metrics = json.loads((clf / "metrics.json").read_text())
    assert metrics["data"]["split"] == {"train": 1044, "val": 150, "test": 300}
