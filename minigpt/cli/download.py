"""`minigpt download`: data sets and GPT-2 files, checksummed."""
from __future__ import annotations


def add(sub):
    p = sub.add_parser(
        "download", help="fetch data sets or GPT-2's files, checksummed",
        description="Download a file set listed in data/manifest.json into the cache folder (or install it "
                    "from a local copy with --from), verify every file's sha256, and print the folder that "
                    "holds it. Files already installed and verified are not fetched again.",
        epilog="examples: minigpt download the-verdict | minigpt download gpt2 --size 124M | "
               "minigpt download sms-spam --from .../shared/data | minigpt download --list")
    p.add_argument("name", nargs="?", help="what to fetch: the-verdict, sms-spam, instruction-data, "
                                           "tiny-shakespeare, gpt2-vocab, gpt2 (see --list)")
    p.add_argument("--size", default=None, help="GPT-2 size for 'gpt2': 124M (default), 355M, 774M, 1558M")
    p.add_argument("--cache-dir", default=None,
                   help="install under this folder (default: $MINIGPT_CACHE or ~/.cache/minigpt)")
    p.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                   help="install from a local copy instead of the network (the shared/data layout, a flat "
                        "folder of the files, or the original archive)")
    p.add_argument("--no-verify", action="store_true",
                   help="accept files without checking their sha256 (needed for files the manifest has no "
                        "checksum for: GPT-2 355M, 774M, 1558M)")
    p.add_argument("--list", action="store_true", help="list what can be downloaded and exit")
    p.set_defaults(func=_run_download)


def _run_download(args) -> int:
    import sys
    from pathlib import Path

    from ..data.shared import DATASETS
    from ..download import fetch, load_manifest
    from ..io import cache_dir

    manifest = load_manifest()
    if args.list or not args.name:
        for name, entry in sorted(manifest["entries"].items()):
            sizes = f" (sizes: {', '.join(entry['sizes'])})" if "sizes" in entry else ""
            print(f"{name:18s} {entry['description']}{sizes}\n{'':18s} licence: {entry['licence']}")
        return 0 if args.list else 2
    folder = fetch(args.name, args.size, cache_dir=args.cache_dir, from_dir=args.from_dir,
                   no_verify=args.no_verify, manifest=manifest)
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            print(f)
    if args.name in DATASETS and (args.cache_dir is None or Path(args.cache_dir).expanduser() == cache_dir()):
        print(f"use it by name: {DATASETS[args.name]} ...", file=sys.stderr)
    return 0
