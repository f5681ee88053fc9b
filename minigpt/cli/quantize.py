"""`minigpt quantize`: write an int8 copy of a model folder (weight-only int8, for generation)."""
from __future__ import annotations

from pathlib import Path

from ..errors import MiniGPTError
from ..io import atomic_write_bytes


def add(sub):
    p = sub.add_parser("quantize", help="save an int8-quantized copy of a model for generation")
    p.add_argument("--model", required=True, help="a training output folder or a model folder")
    p.add_argument("--out", required=True, help="folder to write (config.json + model.safetensors + tokenizer)")
    p.add_argument("--scheme", choices=["int8"], default="int8")
    p.add_argument("--group-size", type=int, default=0,
                   help="one scale per this many inputs of a row (0: one scale per output row)")
    p.set_defaults(func=_cmd_quantize)


def _cmd_quantize(args):
    from ..model import GPT
    from ..train import resolve_model_dir

    folder = resolve_model_dir(args.model)
    out = Path(args.out)
    if out.resolve() == folder.resolve():
        raise MiniGPTError("--out must differ from the model folder (the float32 weights would be replaced)")
    model = GPT.from_pretrained(folder)
    if model.quantization:
        raise MiniGPTError(f"{folder} is already quantized ({model.quantization['scheme']})")
    before = model.weight_bytes()
    model.quantize(args.scheme, args.group_size)
    model.save_pretrained(out)
    for extra in ("tokenizer.json", "encoder.json", "vocab.bpe"):
        if (folder / extra).exists():
            atomic_write_bytes(out / extra, (folder / extra).read_bytes())
    print(f"wrote {out}: weights {before / 1e6:,.1f} MB -> {model.weight_bytes() / 1e6:,.1f} MB "
          f"({args.scheme}, {'groups of ' + str(args.group_size) if args.group_size else 'per output row'})")
    return 0
