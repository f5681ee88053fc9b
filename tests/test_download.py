"""`minigpt download`: checksummed installs from local copies and file:// URLs (no test touches the network)."""
import copy
import hashlib
import json
import shutil
import zipfile

import pytest

from minigpt.download import MANIFEST_PATH, fetch, known_names, load_manifest, sha256_file
from minigpt.errors import MiniGPTError

VERDICT_SHA = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


def _no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_manifest_is_complete_and_honest():
    m = load_manifest()
    assert set(m["entries"]) == {"the-verdict", "sms-spam", "instruction-data", "tiny-shakespeare",
                                 "gpt2-vocab", "gpt2"}
    assert set(m["entries"]["gpt2"]["sizes"]) == {"124M", "355M", "774M", "1558M"}
    for name, entry in m["entries"].items():
        assert entry["licence"] and entry["description"]
        files = [f for s in entry.get("sizes", {}).values() for f in s["files"]] + entry.get("files", [])
        for f in files:
            sha = f["sha256"]
            assert sha is None or (len(sha) == 64 and int(sha, 16) >= 0), (name, f["name"])
            assert f.get("urls") or f.get("member"), (name, f["name"])
            for url in f.get("urls", []):
                assert url.startswith("https://")
    gpt2 = m["entries"]["gpt2"]["sizes"]
    for size, s in gpt2.items():
        assert [f["name"] for f in s["files"]] == ["config.json", "model.safetensors"]
        repo = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}[size]
        assert all(f"huggingface.co/openai-community/{repo}/resolve/main/" in f["urls"][0] for f in s["files"])


def test_shared_checksums_match_the_manifest(shared_data):
    m = load_manifest()
    for name, entry in m["entries"].items():
        for f in entry.get("files", []):
            p = shared_data / f["shared"]
            if p.exists():
                assert sha256_file(p) == f["sha256"], f["shared"]
                assert p.stat().st_size == f["size"]


@pytest.mark.parametrize("name,files", [
    ("the-verdict", ["the-verdict.txt"]),
    ("tiny-shakespeare", ["input.txt"]),
    ("instruction-data", ["instruction-data.json"]),
    ("sms-spam", ["SMSSpamCollection", "readme"]),
    ("gpt2-vocab", ["encoder.json", "vocab.bpe"]),
])
def test_install_from_the_shared_folder(shared_data, tmp_path, name, files):
    folder = fetch(name, cache_dir=tmp_path, from_dir=shared_data, quiet=True)
    assert folder == tmp_path / name
    for f in files:
        assert (folder / f).read_bytes() == (shared_data / load_manifest()["entries"][name]["files"][
            files.index(f)]["shared"]).read_bytes()
    mtimes = [(folder / f).stat().st_mtime_ns for f in files]
    # already installed and verified: nothing is copied again, even without a source
    assert fetch(name, cache_dir=tmp_path, quiet=True) == folder
    assert [(folder / f).stat().st_mtime_ns for f in files] == mtimes
    assert _no_temp_files(tmp_path)


def test_flat_folder_and_tampered_copy(shared_data, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(shared_data / "the-verdict" / "the-verdict.txt", flat / "the-verdict.txt")
    cache = tmp_path / "cache"
    assert sha256_file(fetch("the-verdict", cache_dir=cache, from_dir=flat, quiet=True) / "the-verdict.txt") \
        == VERDICT_SHA

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "the-verdict.txt").write_bytes((flat / "the-verdict.txt").read_bytes().replace(b"Gisburn", b"Gisborn"))
    cache2 = tmp_path / "cache2"
    with pytest.raises(MiniGPTError, match="checksum mismatch for the-verdict.txt.*nothing was installed"):
        fetch("the-verdict", cache_dir=cache2, from_dir=bad, quiet=True)
    assert not (cache2 / "the-verdict" / "the-verdict.txt").exists()
    assert _no_temp_files(cache2)

    # a corrupted installed file is detected and replaced from a good source
    target = cache / "the-verdict" / "the-verdict.txt"
    target.write_bytes(b"corrupted")
    fetch("the-verdict", cache_dir=cache, from_dir=flat, quiet=True)
    assert sha256_file(target) == VERDICT_SHA


def test_unknown_names_and_bad_options(tmp_path):
    with pytest.raises(MiniGPTError, match="unknown download 'nope'; known: gpt2, gpt2-vocab, instruction-data, "
                                           "sms-spam, the-verdict, tiny-shakespeare"):
        fetch("nope", cache_dir=tmp_path)
    with pytest.raises(MiniGPTError, match="no size '2B'"):
        fetch("gpt2", size="2B", cache_dir=tmp_path)
    with pytest.raises(MiniGPTError, match="one size only"):
        fetch("the-verdict", size="124M", cache_dir=tmp_path)
    with pytest.raises(MiniGPTError, match="--from folder not found"):
        fetch("the-verdict", cache_dir=tmp_path, from_dir=tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MiniGPTError, match="the-verdict.txt not found under"):
        fetch("the-verdict", cache_dir=tmp_path, from_dir=empty)


def test_files_without_checksum_need_no_verify(shared_data, tmp_path):
    src = tmp_path / "hf-snapshot"
    src.mkdir()
    (src / "config.json").write_text('{"n_layer": 24}')
    (src / "model.safetensors").write_bytes(b"not really weights")
    # GPT-2's vocabulary under its Hugging Face names (accepted aliases)
    shutil.copy(shared_data / "gpt2" / "encoder.json", src / "vocab.json")
    shutil.copy(shared_data / "gpt2" / "vocab.bpe", src / "merges.txt")
    cache = tmp_path / "cache"
    with pytest.raises(MiniGPTError, match="no sha256 is recorded for config.json, model.safetensors of "
                                           "gpt2/355M.*--no-verify"):
        fetch("gpt2", size="355M", cache_dir=cache, from_dir=src, quiet=True)
    assert not (cache / "gpt2" / "355M" / "model.safetensors").exists()
    # the vocabulary does have a checksum: a wrong one is refused even next to verified weights
    bad = tmp_path / "bad-snapshot"
    shutil.copytree(src, bad)
    (bad / "vocab.json").write_bytes(b"{}")
    with pytest.raises(MiniGPTError, match="mismatch for encoder.json"):
        fetch("gpt2", size="355M", cache_dir=tmp_path / "other", from_dir=bad, quiet=True,
              manifest=_manifest_with_null_vocab_ok())
    folder = fetch("gpt2", size="355M", cache_dir=cache, from_dir=src, no_verify=True, quiet=True)
    assert (folder / "model.safetensors").read_bytes() == b"not really weights"
    assert sha256_file(folder / "encoder.json") == load_manifest()["entries"]["gpt2-vocab"]["files"][0]["sha256"]
    # accepted once with --no-verify: later calls use the installed files without asking again
    assert fetch("gpt2", size="355M", cache_dir=cache, quiet=True) == folder
    stamp = json.loads((folder / ".minigpt-verified.json").read_text())
    assert stamp["model.safetensors"]["accepted_unverified"] is True


def _manifest_with_null_vocab_ok():
    m = copy.deepcopy(load_manifest())
    for f in m["entries"]["gpt2"]["sizes"]["355M"]["files"]:
        f["sha256"] = hashlib.sha256({"config.json": b'{"n_layer": 24}',
                                      "model.safetensors": b"not really weights"}[f["name"]]).hexdigest()
    return m


def test_gpt2_from_shared_needs_the_weights(shared_data, tmp_path):
    with pytest.raises(MiniGPTError, match="config.json not found under"):
        fetch("gpt2", cache_dir=tmp_path, from_dir=shared_data, quiet=True)


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _sms_manifest(zip_sha):
    m = copy.deepcopy(load_manifest())
    m["entries"]["sms-spam"]["archive"]["sha256"] = zip_sha
    return m


def test_archive_members_are_extracted_and_checked(shared_data, tmp_path):
    members = {"SMSSpamCollection": (shared_data / "sms-spam" / "SMSSpamCollection").read_bytes(),
               "readme": (shared_data / "sms-spam" / "readme").read_bytes()}
    src = tmp_path / "src"
    src.mkdir()
    z = _zip(src / "smsspamcollection.zip", members)  # the UCI file name is an accepted alias
    # the manifest pins the published zip's sha256: our rebuilt zip differs and is refused
    with pytest.raises(MiniGPTError, match="checksum mismatch for .*smsspamcollection.zip"):
        fetch("sms-spam", cache_dir=tmp_path / "c0", from_dir=src, quiet=True)
    folder = fetch("sms-spam", cache_dir=tmp_path / "c1", from_dir=src, quiet=True,
                   manifest=_sms_manifest(sha256_file(z)))
    assert (folder / "SMSSpamCollection").read_bytes() == members["SMSSpamCollection"]
    assert (folder / "readme").read_bytes() == members["readme"]
    # a zip whose member was altered fails the member's own checksum
    bad = _zip(tmp_path / "bad.zip", {**members, "readme": b"changed"})
    src2 = tmp_path / "src2"
    src2.mkdir()
    shutil.move(bad, src2 / "sms-spam-collection.zip")
    with pytest.raises(MiniGPTError, match="mismatch for readme"):
        fetch("sms-spam", cache_dir=tmp_path / "c2", from_dir=src2, quiet=True,
              manifest=_sms_manifest(sha256_file(src2 / "sms-spam-collection.zip")))
    assert not (tmp_path / "c2" / "sms-spam" / "readme").exists()
    assert _no_temp_files(tmp_path)


def test_url_download_falls_back_and_verifies(shared_data, tmp_path):
    """file:// URLs exercise the urllib path without any network."""
    good = shared_data / "the-verdict" / "the-verdict.txt"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"not the story")
    m = copy.deepcopy(load_manifest())
    spec = m["entries"]["the-verdict"]["files"][0]
    spec["urls"] = [(tmp_path / "missing.txt").as_uri(), bad.as_uri(), good.as_uri()]
    folder = fetch("the-verdict", cache_dir=tmp_path / "c", manifest=m, quiet=True)
    assert sha256_file(folder / "the-verdict.txt") == VERDICT_SHA
    spec["urls"] = [bad.as_uri()]
    with pytest.raises(MiniGPTError, match="(?s)could not download the-verdict.txt:.*expected 20479"):
        fetch("the-verdict", cache_dir=tmp_path / "c2", manifest=m, quiet=True)
    assert not (tmp_path / "c2" / "the-verdict" / "the-verdict.txt").exists()
    assert _no_temp_files(tmp_path)


def test_archive_download_by_url(shared_data, tmp_path):
    members = {"SMSSpamCollection": (shared_data / "sms-spam" / "SMSSpamCollection").read_bytes(),
               "readme": (shared_data / "sms-spam" / "readme").read_bytes()}
    z = _zip(tmp_path / "published.zip", members)
    m = _sms_manifest(sha256_file(z))
    m["entries"]["sms-spam"]["archive"]["urls"] = [z.as_uri()]
    folder = fetch("sms-spam", cache_dir=tmp_path / "c", manifest=m, quiet=True)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["SMSSpamCollection", "readme"]


def test_cli_download(shared_data, tmp_path, capsys):
    from minigpt.cli import main

    assert main(["download", "the-verdict", "--from", str(shared_data), "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "the-verdict" / "the-verdict.txt") in out
    assert main(["download", "nope", "--cache-dir", str(tmp_path)]) == 2
    assert "unknown download 'nope'; known:" in capsys.readouterr().err
    assert main(["download", "gpt2", "--size", "1558M", "--cache-dir", str(tmp_path)]) == 2
    assert "--no-verify" in capsys.readouterr().err
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in known_names())


def test_manifest_path_is_the_repository_data_folder():
    assert MANIFEST_PATH.name == "manifest.json" and MANIFEST_PATH.parent.name == "data"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bind, read the port, close: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_download_says_so_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """No network involved: the URLs point at a closed port of this machine, or name resolution fails."""
    import socket

    from minigpt.cli import main

    m = copy.deepcopy(load_manifest())
    port = _closed_port()
    m["entries"]["tiny-shakespeare"]["files"][0]["urls"] = [f"http://127.0.0.1:{port}/input.txt",
                                                            f"http://127.0.0.1:{port}/mirror/input.txt"]
    cache = tmp_path / "cache"
    with pytest.raises(MiniGPTError) as e:
        fetch("tiny-shakespeare", cache_dir=cache, manifest=m, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.count("127.0.0.1") == 1  # one line, one mention of the host
    assert msg.startswith("cannot download tiny-shakespeare: network unreachable")
    assert "minigpt download tiny-shakespeare --from DIR" in msg
    assert not cache.exists()  # neither the entry's folder nor the cache root it had to create

    # name resolution failing (the usual offline case): the CLI's one-line error, and no folder either
    def no_dns(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr("minigpt.download.load_manifest", lambda *a: m)
    m["entries"]["tiny-shakespeare"]["files"][0]["urls"] = ["https://raw.example.invalid/input.txt"]
    cache.mkdir()
    assert main(["download", "tiny-shakespeare", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("minigpt: error: cannot download tiny-shakespeare: network unreachable "
                              "(raw.example.invalid: Name or service not known)")
    assert err[-1].endswith("--from DIR")
    assert list(cache.iterdir()) == []  # the existing cache root is kept, nothing is left inside it


def test_failed_download_keeps_an_existing_install_folder(shared_data, tmp_path):
    m = copy.deepcopy(load_manifest())
    fetch("the-verdict", cache_dir=tmp_path, from_dir=shared_data, quiet=True)
    m["entries"]["tiny-shakespeare"]["files"][0]["urls"] = [f"http://127.0.0.1:{_closed_port()}/input.txt"]
    (tmp_path / "tiny-shakespeare").mkdir()
    with pytest.raises(MiniGPTError, match="network unreachable"):
        fetch("tiny-shakespeare", cache_dir=tmp_path, manifest=m, quiet=True)
    assert (tmp_path / "tiny-shakespeare").is_dir()  # it existed before: not ours to remove
    assert (tmp_path / "the-verdict" / "the-verdict.txt").is_file()
