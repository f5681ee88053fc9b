"""Checksummed downloads of the data sets and GPT-2 files listed in ``data/manifest.json``.

    fetch("the-verdict")                       -> ~/.cache/minigpt/the-verdict   (a folder holding the files)
    fetch("gpt2", size="124M")                 -> ~/.cache/minigpt/gpt2/124M     (config.json, model.safetensors,
                                                                                  encoder.json, vocab.bpe)
    fetch("sms-spam", from_dir="../shared/data")   install from a local copy instead of the network

Every file is written to a temporary name beside its destination, checked against the manifest's sha256
(and size), and only then renamed into place, so an interrupted or corrupt transfer never leaves a final
file behind. A file that is already installed and verified is not fetched again (a small stamp file,
``.minigpt-verified.json``, remembers which installed files were verified, so large files are not
re-hashed on every call). Files whose sha256 the manifest does not record (GPT-2 355M/774M/1558M) are
refused unless ``no_verify=True`` (``--no-verify``), which installs files without checking them.

The cache folder is ``cache_dir`` if given, else ``$MINIGPT_CACHE``, else ``~/.cache/minigpt``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from .errors import MiniGPTError
from .io import cache_dir as minigpt_cache_dir, read_json
from .progress import progress_bar

__all__ = ["fetch", "load_manifest", "known_names", "sha256_file", "MANIFEST_PATH"]

def _find_manifest() -> Path:
    """``data/manifest.json`` of the source checkout (editable installs), else the copy a regular install
    puts in ``<prefix>/share/minigpt`` (setup.cfg's data_files)."""
    here = Path(__file__).resolve().parents[1] / "data" / "manifest.json"
    installed = Path(sys.prefix) / "share" / "minigpt" / "manifest.json"
    return here if here.exists() or not installed.exists() else installed


MANIFEST_PATH = _find_manifest()
_STAMP = ".minigpt-verified.json"
_CHUNK = 1 << 20


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    p = Path(path) if path is not None else Path(os.environ.get("MINIGPT_MANIFEST", MANIFEST_PATH))
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MiniGPTError(f"download manifest not found at {p} (set MINIGPT_MANIFEST to its path)") from None
    except (OSError, ValueError) as e:
        raise MiniGPTError(f"cannot read the download manifest {p}: {e}") from None


def known_names(manifest: dict | None = None) -> list[str]:
    return sorted((manifest or load_manifest())["entries"])


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- resolving what to install -----------------------------------------------------------------------------
def _resolve(manifest: dict, name: str, size: str | None):
    """(entry, list of file specs, archive spec or None, relative install folder)."""
    entries = manifest["entries"]
    if name not in entries:
        raise MiniGPTError(f"unknown download {name!r}; known: {', '.join(sorted(entries))}")
    entry = entries[name]
    if "sizes" in entry:
        size = size or entry.get("default_size")
        if size not in entry["sizes"]:
            raise MiniGPTError(f"{name} has no size {size!r}; sizes: {', '.join(entry['sizes'])}")
        files = list(entry["sizes"][size]["files"])
        rel = Path(name) / size
    else:
        if size is not None:
            raise MiniGPTError(f"{name} comes in one size only; --size is for: "
                               f"{', '.join(n for n, e in entries.items() if 'sizes' in e)}")
        files = list(entry["files"])
        rel = Path(name)
    for inc in entry.get("include", []):
        files += [dict(f, included_from=inc) for f in entries[inc]["files"]]
    return entry, files, entry.get("archive"), rel


# --- verification stamps -----------------------------------------------------------------------------------
def _read_stamp(folder: Path) -> dict:
    if not (folder / _STAMP).exists():
        return {}
    try:  # bounded: a FIFO or /dev/zero in its place is refused, not read forever
        return read_json(folder / _STAMP, "verification stamp", max_bytes=1 << 20, max_depth=8)
    except MiniGPTError:
        return {}  # a damaged stamp only costs a re-check of the files


def _write_stamp(folder: Path, stamp: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_STAMP + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(stamp, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / _STAMP)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _already_installed(folder: Path, spec: dict, stamp: dict, no_verify: bool) -> bool:
    dest = folder / spec["name"]
    if not dest.is_file():
        return False
    rec = stamp.get(spec["name"])
    fresh = rec is not None and {k: rec.get(k) for k in ("size", "mtime_ns")} == _stat_key(dest)
    if spec.get("sha256") is None:
        # accepted earlier with --no-verify (stamped), or accepted now
        return no_verify or (fresh and rec.get("accepted_unverified", False))
    if fresh and rec.get("sha256") == spec["sha256"]:
        return True
    if sha256_file(dest) == spec["sha256"]:
        stamp[spec["name"]] = {"sha256": spec["sha256"], **_stat_key(dest)}
        return True
    return False


# --- writing files atomically ----------------------------------------------------------------------------
class _Sink:
    """A temporary file beside ``dest`` that hashes what is written; ``commit`` checks and renames it."""

    def __init__(self, dest: Path, limit: int | None = None, origin: str = ""):
        self.dest, self.limit, self.origin = dest, limit, origin
        # the pid in the name lets a later fetch remove what a killed one left (see _remove_stale_parts)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".part", dir=dest.parent)
        self.f = os.fdopen(fd, "wb")
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b: bytes) -> None:
        if self.limit is not None and self.n + len(b) > self.limit:  # enforced with --no-verify too
            self.discard()
            raise MiniGPTError(f"{self.dest.name} from {self.origin or 'the source'} is larger than the "
                               f"{self.limit:,} bytes the manifest records; nothing was installed")
        self.f.write(b)
        self.h.update(b)
        self.n += len(b)

    def commit(self, spec: dict, origin: str, no_verify: bool) -> dict:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        digest = self.h.hexdigest()
        want_sha, want_size = spec.get("sha256"), spec.get("size")
        if want_size is not None and self.n != want_size:  # a size the manifest records holds with --no-verify too
            self.discard()
            raise MiniGPTError(f"size mismatch for {spec['name']} from {origin}: {self.n} bytes, expected {want_size}; "
                               f"nothing was installed")
        if not no_verify:
            if want_sha is not None and digest != want_sha:
                self.discard()
                raise MiniGPTError(f"checksum mismatch for {spec['name']} from {origin}: sha256 {digest}, "
                                   f"expected {want_sha}; nothing was installed")
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.dest)
        rec = {"sha256": digest, **_stat_key(self.dest)}
        if want_sha is None or digest != want_sha:
            rec["accepted_unverified"] = True
        return rec

    def discard(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass
        _unlink(self.tmp)


def _remove_stale_parts(folder: Path) -> None:
    """Remove the temporary ``.part`` files of fetches that were killed (their process no longer runs)."""
    for p in folder.glob(".*.part"):
        bits = p.name.rsplit(".", 3)  # ".name", pid, random, "part"
        try:
            pid = int(bits[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _unlink(p)
        except OSError:
            pass  # alive (or not ours to signal): leave it


def _copy_into(src, spec: dict, dest: Path, origin: str, no_verify: bool) -> dict:
    sink = _Sink(dest, spec.get("size"), origin)
    try:
        while chunk := src.read(_CHUNK):
            sink.write(chunk)
    except BaseException:
        sink.discard()
        raise
    return sink.commit(spec, origin, no_verify)


def _download_to(url: str, sink_write, desc: str, quiet: bool) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "minigpt-download/1"})
    with urllib.request.urlopen(req, timeout=60) as r:
        total = r.headers.get("Content-Length")
        bar = None
        if not quiet:
            bar = progress_bar(int(total) if total else None, unit="B", unit_scale=True, desc=desc, leave=False)
        try:
            while chunk := r.read(_CHUNK):
                sink_write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()


class NetworkUnreachable(MiniGPTError):
    """No URL of a file could be reached at all (no DNS, no route, connection refused or timed out)."""


def _is_unreachable(e: BaseException) -> bool:
    """True when ``e`` (or the reason of a URLError) means the server could not be reached at all, as
    opposed to a server that answered with an error or a file that failed its checks."""
    reason = getattr(e, "reason", e)
    if isinstance(reason, (socket.gaierror, ConnectionError, TimeoutError, socket.timeout)):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH,
                                                            errno.ENETDOWN, errno.EHOSTDOWN)


def _fetch_url(spec: dict, dest: Path, no_verify: bool, quiet: bool) -> dict:
    errors, unreachable = [], []
    for url in spec.get("urls", []):
        sink = _Sink(dest, spec.get("size"), url)
        try:
            _download_to(url, sink.write, spec["name"], quiet)
        except (urllib.error.URLError, OSError, ValueError) as e:
            sink.discard()
            reason = getattr(e, "reason", None) or e
            errors.append(f"{url}: {reason}")
            if _is_unreachable(e):
                unreachable.append(f"{urllib.parse.urlsplit(url).netloc}: {getattr(reason, 'strerror', None) or reason}")
            continue
        except BaseException:
            sink.discard()
            raise
        try:
            return sink.commit(spec, url, no_verify)
        except MiniGPTError as e:
            errors.append(str(e))
    if errors and len(unreachable) == len(errors):
        raise NetworkUnreachable(f"network unreachable ({'; '.join(dict.fromkeys(unreachable))})")
    raise MiniGPTError(f"could not download {spec['name']}:\n  " + "\n  ".join(errors or ["no URL listed"]))


# --- local copies (--from DIR) ---------------------------------------------------------------------------
def _local_candidates(root: Path, spec: dict, name: str, rel: Path) -> list[Path]:
    names = [spec["name"], *spec.get("aliases", [])]
    cands = []
    if spec.get("shared"):
        cands.append(root / spec["shared"])
    for n in names:
        cands += [root / n, root / rel / n, root / name / n]
        if spec.get("included_from"):
            cands.append(root / spec["included_from"] / n)
    return cands


def _archive_candidates(root: Path, archive: dict, name: str) -> list[Path]:
    names = [archive["name"], *archive.get("aliases", [])]
    return [p for n in names for p in (root / n, root / name / n)]


def _install_from_archive(zpath: Path, archive: dict, specs: list[dict], folder: Path, no_verify: bool,
                          stamp: dict, check_archive: bool) -> None:
    if check_archive and not no_verify:
        want = archive.get("sha256")
        if want is not None:
            got = sha256_file(zpath)
            if got != want:
                raise MiniGPTError(f"checksum mismatch for {zpath}: sha256 {got}, expected {want}; nothing "
                                   f"was installed")
    try:
        with zipfile.ZipFile(zpath) as z:
            members = set(z.namelist())
            for spec in specs:
                member = spec.get("member", spec["name"])
                if member not in members:
                    raise MiniGPTError(f"{zpath} has no member {member!r}")
                with z.open(member) as src:
                    stamp[spec["name"]] = _copy_into(src, spec, folder / spec["name"], f"{zpath}:{member}",
                                                     no_verify)
    except zipfile.BadZipFile:
        raise MiniGPTError(f"{zpath} is not a valid zip archive") from None


# --- the entry point -------------------------------------------------------------------------------------
def fetch(name: str, size: str | None = None, *, cache_dir=None, from_dir=None, no_verify: bool = False,
          quiet: bool = False, manifest: dict | None = None) -> Path:
    """Install the files of manifest entry ``name`` and return the folder that holds them.

    size: for entries with sizes (``gpt2``: 124M, 355M, 774M, 1558M; default 124M).
    cache_dir: where to install (default $MINIGPT_CACHE or ~/.cache/minigpt); files go to <cache>/<name>
      (<cache>/gpt2/<size> for GPT-2 weights).
    from_dir: install from a local copy instead of the network: the project's shared/data folder layout,
      a flat folder with the files (or an archive, like the UCI zip), or another minigpt cache.
    no_verify: accept files without checking them (needed for files with no recorded sha256).
    """
    manifest = manifest or load_manifest()
    _, specs, archive, rel = _resolve(manifest, name, size)
    root = Path(cache_dir).expanduser() if cache_dir is not None else minigpt_cache_dir()
    folder = root / rel
    stamp = _read_stamp(folder)
    missing = [s for s in specs if not _already_installed(folder, s, stamp, no_verify)]
    unverifiable = [s["name"] for s in missing if s.get("sha256") is None]
    if unverifiable and not no_verify:
        raise MiniGPTError(
            f"no sha256 is recorded for {', '.join(unverifiable)} of {rel.as_posix()}, so minigpt cannot verify "
            f"what it would install and refuses to; pass --no-verify (no_verify=True) to accept the files "
            f"unchecked")
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again if nothing lands
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MiniGPTError(f"cannot create the cache folder {folder}: {e.strerror or e}") from None
    _remove_stale_parts(folder)
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        if from_dir is not None:
            src_root = Path(from_dir).expanduser()
            if not src_root.is_dir():
                raise MiniGPTError(f"--from folder not found: {src_root}")
            from_archive = []
            for spec in missing:
                found = next((p for p in _local_candidates(src_root, spec, name, rel) if p.is_file()), None)
                if found is None:
                    if spec.get("member") and archive:
                        from_archive.append(spec)
                        continue
                    raise MiniGPTError(f"{spec['name']} not found under {src_root} (looked for "
                                       f"{', '.join(str(p) for p in _local_candidates(src_root, spec, name, rel))})")
                with open(found, "rb") as src:
                    stamp[spec["name"]] = _copy_into(src, spec, folder / spec["name"], str(found), no_verify)
                say(f"installed {spec['name']} from {found}")
            if from_archive:
                zpath = next((p for p in _archive_candidates(src_root, archive, name) if p.is_file()), None)
                if zpath is None:
                    raise MiniGPTError(f"{', '.join(s['name'] for s in from_archive)} not found under {src_root}, "
                                       f"nor the archive {archive['name']}")
                _install_from_archive(zpath, archive, from_archive, folder, no_verify, stamp, check_archive=True)
                say(f"installed {', '.join(s['name'] for s in from_archive)} from {zpath}")
        else:
            direct = [s for s in missing if s.get("urls")]
            via_archive = [s for s in missing if not s.get("urls")]
            for spec in direct:
                say(f"downloading {spec['name']} ...")
                try:
                    stamp[spec["name"]] = _fetch_url(spec, folder / spec["name"], no_verify, quiet)
                except NetworkUnreachable as e:
                    raise NetworkUnreachable(f"cannot download {name}: {e}; install it from a local copy "
                                             f"instead: minigpt download {name} --from DIR") from None
            if via_archive:
                if not archive:
                    raise MiniGPTError(f"manifest entry {name} lists no URL for "
                                       f"{', '.join(s['name'] for s in via_archive)}")
                zdest = folder / archive["name"]
                say(f"downloading {archive['name']} ...")
                try:
                    _fetch_url({**archive}, zdest, no_verify, quiet)  # verified against the archive's sha256
                except NetworkUnreachable as e:
                    raise NetworkUnreachable(f"cannot download {name}: {e}; install it from a local copy "
                                             f"instead: minigpt download {name} --from DIR") from None
                try:
                    _install_from_archive(zdest, archive, via_archive, folder, no_verify, stamp,
                                          check_archive=False)
                finally:
                    _unlink(zdest)
    finally:
        stamp = {k: v for k, v in stamp.items() if (folder / k).is_file()}
        if stamp or not created:
            _write_stamp(folder, stamp)
        else:  # nothing was installed into folders made by this call: leave no empty folder behind
            for p in created:  # innermost first
                try:
                    p.rmdir()
                except OSError:
                    break
    if not missing:
        say(f"{rel.as_posix()}: already installed and verified")
    for spec in specs:
        rec = stamp.get(spec["name"], {})
        if rec.get("accepted_unverified"):
            say(f"warning: {spec['name']} was installed WITHOUT checksum verification (--no-verify)")
    return folder
