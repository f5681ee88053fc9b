"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename over the
target. A crash or kill at any moment leaves either the old file or the new one, never a torn one.
Also where minigpt keeps downloaded and generated files: :func:`cache_dir`."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import MiniGPTError


def cache_dir() -> Path:
    """minigpt's cache folder: ``$MINIGPT_CACHE``, else ``~/.cache/minigpt`` (not created here)."""
    env = os.environ.get("MINIGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minigpt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as standard JSON (NaN and infinities as null), atomically."""
    atomic_write_text(path, dumps(obj, indent=2, sort_keys=False) + "\n")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number in standard JSON")


def read_json(path, what: str = "file", expect: type | tuple | None = dict, max_bytes: int = 1 << 26):
    """Parse the JSON file ``path`` or raise a one-line ``MiniGPTError`` naming it.

    Refused: a missing or unreadable file, more than ``max_bytes`` bytes, text that is not UTF-8, invalid JSON
    (including the non-standard ``NaN`` / ``Infinity``), nesting too deep to parse, and a top-level value that
    is not of type ``expect`` (default: an object). ``what`` names the file in messages ("config.json", ...).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MiniGPTError(f"{path}: {what} of {size:,} bytes is larger than the {max_bytes:,} bytes allowed")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise MiniGPTError(f"{path} not found") from None
    except IsADirectoryError:
        raise MiniGPTError(f"{path} is a folder, not a {what}") from None
    except UnicodeDecodeError:
        raise MiniGPTError(f"{path} is not a valid {what} (not UTF-8 text)") from None
    except OSError as e:
        raise MiniGPTError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise MiniGPTError(f"{path} is not a valid {what} (JSON nested too deeply)") from None
    except ValueError as e:  # json.JSONDecodeError is a ValueError, so is the NaN refusal
        raise MiniGPTError(f"{path} is not a valid {what} (invalid JSON: {e})") from None
    if expect is not None and not isinstance(obj, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        names = names.replace("dict", "a JSON object").replace("list", "a JSON list")
        raise MiniGPTError(f"{path} is not a valid {what} (expected {names} at the top level, got "
                           f"{type(obj).__name__})")
    return obj


def finite_json(obj):
    """``obj`` with every float NaN or infinity replaced by None, so that it is standard JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def dumps(obj, **kw) -> str:
    """``json.dumps`` of ``obj`` as standard JSON: NaN and infinities become null (never a bare ``NaN``)."""
    return json.dumps(finite_json(obj), allow_nan=False, **kw)
