"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename over the
target. A crash or kill at any moment leaves either the old file or the new one, never a torn one.
Also where minigpt keeps downloaded and generated files: :func:`cache_dir`."""
from __future__ import annotations

import json
import os
import stat
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


def _depth_exceeds(obj, limit: int) -> bool:
    """Whether ``obj`` nests objects and lists deeper than ``limit`` levels (walked level by level, without
    recursion)."""
    level, depth = [obj] if isinstance(obj, (dict, list)) else [], 1
    while level:
        if depth > limit:
            return True
        nxt = []
        for o in level:
            nxt += [v for v in (o.values() if type(o) is dict else o) if type(v) is dict or type(v) is list]
        level, depth = nxt, depth + 1
    return False


def read_bytes_bounded(path, what: str = "file", max_bytes: int = 1 << 26) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them, or a one-line ``MiniGPTError``.

    Only a regular file is read (a FIFO, a device such as ``/dev/zero`` or a folder is refused, also behind a
    symlink), and never more than ``max_bytes + 1`` bytes (a file that grows while read is still refused): no
    input can block the reader or fill the memory."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MiniGPTError(f"{path} not found") from None
    except OSError as e:
        raise MiniGPTError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise MiniGPTError(f"{path} is a folder, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise MiniGPTError(f"{path} is not a regular file (a FIFO, device or socket), not a {what}")
        if st.st_size > max_bytes:
            raise MiniGPTError(f"{path}: {what} of {st.st_size:,} bytes is larger than the {max_bytes:,} bytes allowed")
        chunks, got = [], 0  # the first read asks for the whole file (one call, no copy), then up to the limit
        while got <= max_bytes:
            want = st.st_size + 1 if not chunks else 1 << 20  # the size stat gives, +1 to see the end
            b = os.read(fd, min(want, max_bytes + 1 - got))
            if not b:
                break
            chunks.append(b)
            got += len(b)
        if got > max_bytes:
            raise MiniGPTError(f"{path}: {what} is larger than the {max_bytes:,} bytes allowed")
        return b"".join(chunks)
    except OSError as e:
        raise MiniGPTError(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def read_json(path, what: str = "file", expect: type | tuple | None = dict, max_bytes: int = 1 << 26,
              max_depth: int | None = None):
    """Parse the JSON file ``path`` or raise a one-line ``MiniGPTError`` naming it.

    Refused: a missing or unreadable file, anything but a regular file (FIFO, device, folder), more than
    ``max_bytes`` bytes (never read past that), text that is not UTF-8, invalid JSON (including the
    non-standard ``NaN`` / ``Infinity``), nesting deeper than the parser allows or, when given, than
    ``max_depth`` levels of objects and lists (small files such as config.json pass one; walking a large
    tokenizer file for it would cost as much as parsing it), and a top-level value that is not of type
    ``expect`` (default: an object). ``what`` names the file in messages ("config.json", ...).
    """
    path = Path(path)
    data = read_bytes_bounded(path, what, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MiniGPTError(f"{path} is not a valid {what} (not UTF-8 text)") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise MiniGPTError(f"{path} is not a valid {what} (JSON nested too deeply)") from None
    except ValueError as e:  # json.JSONDecodeError is a ValueError, so is the NaN refusal
        raise MiniGPTError(f"{path} is not a valid {what} (invalid JSON: {e})") from None
    if max_depth and _depth_exceeds(obj, max_depth):
        raise MiniGPTError(f"{path} is not a valid {what} (JSON nested deeper than {max_depth} levels)")
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
