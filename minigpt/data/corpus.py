"""The built-in default corpus: the docstrings of the installed Python standard library.

Every machine with Python has it, so ``minigpt train`` works offline with no download. At first use the
standard library's source folder (``sysconfig.get_paths()["stdlib"]``) is walked in sorted path order, each
``.py`` file is parsed with ``ast`` (never imported), and the docstrings of the module, its classes and
functions are taken in source order and cleaned with ``inspect.cleandoc``. Skipped: site-packages, test
suites (any ``test``/``tests``/``idle_test`` folder, ``test_*.py``), build folders, files that fail to parse,
and exact repeats of a docstring already taken (the many "Return repr(self)." lines).

Layout of the text: within a module, docstrings are separated by a blank line; modules are separated by
``<|endoftext|>`` (one document per module, as ``load_texts`` joins files). With CPython 3.11 this is about
1.77 MB of English prose in ~640 documents (a few dozen characters are non-ASCII); building it
takes 2-4 s, reading the cache a few milliseconds.

The text is cached in ``$MINIGPT_CACHE`` (else ``~/.cache/minigpt``) as
``default-corpus-py<X.Y.Z>-v<N>.txt``, written atomically (temp file, fsync, rename) with a sha256 header
line; a cache file that cannot be read or fails its checksum is rebuilt.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import os
import platform
import sysconfig
from pathlib import Path

from ..io import atomic_write_bytes, cache_dir
from ..tokenizer.special import ENDOFTEXT

__all__ = ["default_corpus", "build_default_corpus", "corpus_cache_path"]

FORMAT_VERSION = 1
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib-dynload",
              "_bundled"}
_HEADER = "# minigpt default corpus v{v} sha256={h}\n"


def corpus_cache_path(directory: Path | None = None) -> Path:
    d = Path(directory) if directory is not None else cache_dir()
    return d / f"default-corpus-py{platform.python_version()}-v{FORMAT_VERSION}.txt"


def _stdlib_files(root: Path):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        folders = rel.parts[:-1]
        if any(p in _SKIP_DIRS or p.startswith("config-") or p.startswith("plat-") for p in folders):
            continue
        if rel.name.startswith("test_") or rel.name == "conftest.py":
            continue
        yield path


def _docstrings(tree: ast.AST):
    """Docstrings of a module and its (nested) classes and functions, in source order."""
    stack = [tree]
    while stack:
        node = stack.pop()
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield doc
        children = [c for c in ast.iter_child_nodes(node)
                    if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        stack.extend(reversed(children))


def build_default_corpus(stdlib: str | os.PathLike | None = None) -> str:
    """Extract the corpus from the standard library sources (no caching; ~4 s)."""
    root = Path(stdlib) if stdlib is not None else Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    documents = []
    for path in _stdlib_files(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
            continue
        docs = []
        for d in _docstrings(tree):
            d = inspect.cleandoc(d).replace(ENDOFTEXT, "").strip()
            if d and d not in seen:
                seen.add(d)
                docs.append(d)
        if docs:
            documents.append("\n\n".join(docs))
    return ENDOFTEXT.join(documents)


def _read_cache(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
        header, _, body = raw.partition(b"\n")
        text = body.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    expected = _HEADER.format(v=FORMAT_VERSION, h=hashlib.sha256(body).hexdigest()).rstrip("\n").encode()
    return text if header == expected and text else None


def _write_cache(path: Path, text: str) -> None:
    body = text.encode("utf-8")
    data = _HEADER.format(v=FORMAT_VERSION, h=hashlib.sha256(body).hexdigest()).encode() + body
    atomic_write_bytes(path, data)


def default_corpus(separator: str = ENDOFTEXT, cache: bool = True) -> str:
    """The standard-library docstring corpus (see the module docstring), cached after the first call.

    ``separator`` replaces ``<|endoftext|>`` between modules (for example ``"\\n\\n"``). ``cache=False``
    rebuilds without touching the cache. When the cache folder is not writable the text is still returned.
    """
    text = None
    if cache:
        path = corpus_cache_path()
        text = _read_cache(path)
        if text is None:
            text = build_default_corpus()
            try:
                _write_cache(path, text)
            except OSError:
                pass
    else:
        text = build_default_corpus()
    return text if separator == ENDOFTEXT else text.replace(ENDOFTEXT, separator)
