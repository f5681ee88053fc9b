"""`minigpt quantize`: write an int8 copy of a model folder (weight-only int8, for generation)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..errors import MiniGPTError
from ..io import _fsync_dir, atomic_write_bytes


def add(sub):
    p = sub.add_parser("quantize", help="save an int8-quantized copy of a model for generation")
    p.add_argument("--model", required=True, help="a training output folder or a model folder (LoRA adapters are "
                   "merged into the weights first)")
    p.add_argument("--out", required=True, help="folder to write (config.json + model.safetensors + tokenizer); "
                   "must not exist or be empty, unless --force")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder as a whole (none of its "
                   "old files are kept)")
    p.add_argument("--scheme", choices=["int8"], default="int8")
    p.add_argument("--group-size", type=int, default=0,
                   help="one scale per this many inputs of a row (0: one scale per output row)")
    p.set_defaults(func=_cmd_quantize)


def _check_out(out: Path, folder: Path, force: bool) -> None:
    """Refuse an --out that is a file, that holds (or is) the model read, or that is not empty without --force."""
    if out.exists() and not out.is_dir():
        raise MiniGPTError(f"--out {out} is a file, not a folder")
    src, dst = folder.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise MiniGPTError(f"--out {out} holds the model being quantized ({folder}): choose another folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MiniGPTError(f"--out {out} already exists and is not empty: choose another folder, or pass --force "
                           "to replace it (all its files)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def _clean_leftovers(out: Path) -> None:
    """Remove what a killed ``quantize`` into ``out`` left: its temporary folder, and an old folder renamed
    aside once the new one is in place (with ``out`` missing, the old folder is the only copy: kept)."""
    pat = re.compile(rf"\.(tmp|old)-{re.escape(out.name)}-(\d+)")
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        m = pat.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink() and not _pid_alive(int(m.group(2))) \
                and (m.group(1) == "tmp" or out.is_dir()):
            shutil.rmtree(p, ignore_errors=True)


def _cmd_quantize(args):
    from ..loading import _tokenizer_folder
    from ..model.folders import load_model
    from ..nn.lora import has_lora, merge_lora
    from ..train import resolve_model_dir

    if args.group_size < 0:
        raise MiniGPTError(f"--group-size must be >= 0 (0: one scale per output row), got {args.group_size}")
    folder = resolve_model_dir(args.model)
    out = Path(args.out)
    _check_out(out, folder, args.force)  # before any work
    model = load_model(folder, kind="lm")
    if model.quantization:
        raise MiniGPTError(f"{folder} is already quantized ({model.quantization['scheme']})")
    if has_lora(model):
        merge_lora(model)  # int8 weights carry no adapters: fold them in first
    before = model.weight_bytes()
    model.quantize(args.scheme, args.group_size)
    tok_dir = _tokenizer_folder(folder)
    # Written whole into a temporary folder beside --out, then renamed into place: a kill leaves the old
    # folder (or none) and a .tmp- folder, never a mix of old and new files that would load.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    old = out.parent / f".old-{out.name}-{os.getpid()}"
    _clean_leftovers(out)
    try:
        model.save_pretrained(tmp)
        for extra in ("tokenizer.json", "encoder.json", "vocab.bpe"):
            if tok_dir is not None and (tok_dir / extra).exists():
                atomic_write_bytes(tmp / extra, (tok_dir / extra).read_bytes())
        _check_out(out, folder, args.force)  # again: the folder may have been filled meanwhile
        if out.is_dir() and any(out.iterdir()):
            os.replace(out, old)
        elif out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)  # put the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)
    print(f"wrote {out}: weights {before / 1e6:,.1f} MB -> {model.weight_bytes() / 1e6:,.1f} MB "
          f"({args.scheme}, {'groups of ' + str(args.group_size) if args.group_size else 'per output row'})")
    return 0
