"""Small things a first user meets: `generate` is reproducible by default and its help shows every default;
piped `chat` separates its answers; `python` started in the folder above the clone imports the package, not
the clone folder as an empty namespace package."""
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import minigpt
from minigpt.cli import main
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import BPETokenizer

REPO = Path(__file__).resolve().parents[1]
TEXT = "The quick brown fox jumps over the lazy dog. Every effort moves you. " * 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    tok = BPETokenizer.train(TEXT, 280, special_tokens=("<|endoftext|>",))
    minigpt.random.manual_seed(5)
    GPT(GPTConfig.preset("nano", vocab_size=tok.vocab_size, context_length=32)).save_pretrained(d)
    tok.save(d / "tokenizer.json")
    return d


def test_generate_help_shows_the_sampling_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for option, default in (("--top-k", "default: off"), ("--top-p", "default: off"), ("--seed", "default: 123"),
                            ("--temperature", "default: 0.8")):
        after = help_text.split(option + " ")[-1]
        assert default in after.split(" --")[0], (option, after[:200])


def test_generate_is_reproducible_by_default(model_dir, capsys):
    argv = ["generate", "--model", str(model_dir), "--prompt", "The quick", "--max-new-tokens", "12",
            "--temperature", "1.5"]
    outs = []
    for extra in ([], [], ["--seed", "123"], ["--seed", "7"]):
        assert main(argv + extra) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2]     # the default seed is 123
    assert outs[3] != outs[0]                # another seed, another sample (12 tokens at temperature 1.5)


def test_piped_chat_separates_the_answers(model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Name a fox.\n\nName a dog.\nName a day.\n"))
    assert main(["chat", "--model", str(model_dir), "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    answers = out.split("\n---\n")
    assert len(answers) == 3 and out.count("---") >= 2


def test_editable_install_imports_the_package_from_the_folder_above_the_clone(tmp_path):
    """The editable install puts the clone on sys.path (a .pth file), so from the clone's parent folder, where
    the clone itself (a folder named minigpt without __init__.py) is a namespace-package candidate, `import
    minigpt` still finds the real package."""
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel", reason="building the editable wheel in process needs the wheel package "
                        "(the test extra installs it)")
    clone = tmp_path / "minigpt"
    shutil.copytree(REPO / "minigpt", clone / "minigpt", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / f, clone / f)
    (clone / "data").mkdir()
    shutil.copy(REPO / "data" / "manifest.json", clone / "data" / "manifest.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    build = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                            "print(build_meta.build_editable(sys.argv[1]))", str(tmp_path / "wheel")],
                           cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = tmp_path / "wheel" / build.stdout.split()[-1]
    with zipfile.ZipFile(wheel) as z:
        pth = [n for n in z.namelist() if n.endswith(".pth")]
        assert len(pth) == 1, z.namelist()
        assert Path(z.read(pth[0]).decode().strip()) == clone  # the clone on sys.path, not an import hook
        (tmp_path / "site").mkdir()
        z.extract(pth[0], tmp_path / "site")
    # -S: this interpreter's own site-packages are added as plain folders (NumPy, Numba) without running their
    # .pth files, so the test's own editable install of minigpt cannot answer in the clone's place
    import site
    code = (f"import site, sys; site.addsitedir({str(tmp_path / 'site')!r}); "
            f"sys.path.extend({site.getsitepackages()!r}); import minigpt; "
            "print(minigpt.__file__); print(minigpt.tensor([1.0, 2.0]).shape)")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == [str(clone / "minigpt" / "__init__.py"), "(2,)"]
