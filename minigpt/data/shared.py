"""Finding the real data sets (the-verdict, SMS spam, instruction data, Tiny Shakespeare, GPT-2 vocabulary).

A data set can be named instead of given as a path: ``--data sms-spam``, ``--text the-verdict``,
``read_labelled("sms-spam")``. :func:`dataset_path` turns a name into the data set's file, looking in
this order:

1. ``$MINIGPT_DATA``, a folder you choose (the shared-data layout, ``sms-spam/SMSSpamCollection``);
2. the download cache, where ``minigpt download NAME`` installs (``$MINIGPT_CACHE``, else
   ``~/.cache/minigpt``: ``<cache>/sms-spam/SMSSpamCollection``);
3. a local data folder ``../shared/data`` beside the checkout (or beside the current folder).

A path that exists always wins over a name. The names, and each data set's file, come from the download
manifest (``data/manifest.json``): the data set's file is the first file its entry lists.
The files are never copied into the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..download import load_manifest
from ..errors import MiniGPTError
from ..io import cache_dir

_REPO_ROOT = Path(__file__).resolve().parents[2]

# manifest entries that are data sets (gpt2 and gpt2-vocab are model files), each with a command that uses it
# by name (`minigpt download` prints it), and other spellings of them
DATASETS = {"the-verdict": "minigpt train --text the-verdict",
            "sms-spam": "minigpt finetune classify --data sms-spam",
            "instruction-data": "minigpt finetune instruct --data instruction-data",
            "tiny-shakespeare": "minigpt train --text tiny-shakespeare"}
ALIASES = {"tinyshakespeare": "tiny-shakespeare"}  # the shared data folder's spelling


def _local_data_dirs() -> list[Path]:
    return [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def shared_data_dir() -> Path | None:
    """The shared data folder (``$MINIGPT_DATA``, else ``../shared/data``), or None when it cannot be found."""
    env = os.environ.get("MINIGPT_DATA")
    candidates = [Path(env).expanduser()] if env else []
    for c in candidates + _local_data_dirs():
        if c.is_dir():
            return c
    return None


def shared_file(relpath: str) -> Path | None:
    """A file inside the shared data folder (e.g. ``"gpt2/encoder.json"``), or None when absent."""
    root = shared_data_dir()
    if root is None:
        return None
    p = root / relpath
    return p if p.exists() else None


def dataset_names() -> list[str]:
    """The data set names :func:`dataset_path` knows (other spellings in ``ALIASES``)."""
    return list(DATASETS)


def dataset_candidates(name: str) -> list[Path]:
    """Where the data set ``name`` is looked for, in order (see the module docstring)."""
    key = ALIASES.get(name, name)
    if key not in DATASETS:
        raise MiniGPTError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    spec = load_manifest()["entries"][key]["files"][0]
    shared_rel, cache_rel = Path(spec["shared"]), Path(key) / spec["name"]
    env = os.environ.get("MINIGPT_DATA")
    found = [Path(env).expanduser() / rel for rel in dict.fromkeys((shared_rel, cache_rel))] if env else []
    found.append(cache_dir() / cache_rel)
    found += [d / shared_rel for d in _local_data_dirs()]
    return list(dict.fromkeys(found))


def dataset_path(name_or_path) -> Path:
    """The file of a data set given by name (``"sms-spam"``, ``"instruction-data"``, ``"the-verdict"``,
    ``"tiny-shakespeare"``) or by path.

    A path that exists is returned as it is, so is anything that is not a data set name (the reader then
    says the file is missing). A name is looked up in ``$MINIGPT_DATA``, the download cache, then
    ``../shared/data``; when no copy is found, the error names the command that installs one::

        >>> dataset_path("sms-spam")                                    # doctest: +SKIP
        PosixPath('/home/me/.cache/minigpt/sms-spam/SMSSpamCollection')
    """
    path = Path(name_or_path).expanduser()
    key = ALIASES.get(str(name_or_path), str(name_or_path))
    if path.exists() or key not in DATASETS:
        return path
    for cand in dataset_candidates(key):
        if cand.is_file():
            return cand
    env = os.environ.get("MINIGPT_DATA")
    where = (f"$MINIGPT_DATA={env}, " if env else "") + f"{cache_dir()}, ../shared/data"
    raise MiniGPTError(f"data set {key} is not installed (looked in {where}): fetch it with `minigpt download "
                       f"{key}` (offline: `minigpt download {key} --from DIR` with a local copy)")
