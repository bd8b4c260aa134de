"""The ``refmask`` command line.

    refmask gallery [--ascii]                         every primitive, drawn
    refmask render MASK_JSON --q-len N --k-len N      one mask (JSON as written by to_json)
                   [--batch B] [--head H] [--png PATH] [--cell PX] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import sys

from refmask import SPEC_VERSION, __version__, render
from refmask.masks import from_json

from .gallery import gallery


def _picture(mask, q_len: int, k_len: int, batch: int, head: int, ascii_only: bool) -> str:
    batches = mask.batch_size or 1
    heads = mask.num_heads or 1
    keep = mask.materialize(batches, heads, q_len, k_len)
    return render.to_text(keep, batch=batch, head=head, ascii=ascii_only)


def _gallery(args) -> int:
    print(f"refmask {__version__} (spec {SPEC_VERSION}): the mask primitives")
    print("positions: pq = i + offset(b), pk = j; top_left offset 0, bottom_right Tk - Tq\n")
    for entry in gallery():
        print(f"{entry.name}\n  rule: {entry.rule}\n  mask: {entry.mask!r}")
        print(_picture(entry.mask, entry.q_len, entry.k_len, 0, 0, args.ascii))
        print()
    return 0


def _render(args) -> int:
    mask = from_json(json.loads(args.mask))
    if args.png:
        batches = mask.batch_size or 1
        heads = mask.num_heads or 1
        keep = mask.materialize(batches, heads, args.q_len, args.k_len)
        render.to_png(keep[args.batch, args.head], args.png, cell=args.cell,
                      overwrite=args.overwrite)
        print(f"wrote {args.png}")
        return 0
    print(_picture(mask, args.q_len, args.k_len, args.batch, args.head, args.ascii))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refmask", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version",
                        version=f"refmask {__version__} (spec {SPEC_VERSION})")
    commands = parser.add_subparsers(dest="command", required=True)

    show = commands.add_parser("gallery", help="draw every mask primitive")
    show.add_argument("--ascii", action="store_true", help="use '#' and '.' only")
    show.set_defaults(run=_gallery)

    one = commands.add_parser("render", help="draw one mask given as JSON")
    one.add_argument("mask", help='mask JSON, e.g. \'{"kind": "causal", "align": "top_left"}\'')
    one.add_argument("--q-len", type=int, required=True, help="Tq")
    one.add_argument("--k-len", type=int, required=True, help="Tk")
    one.add_argument("--batch", type=int, default=0, help="batch entry to draw (default 0)")
    one.add_argument("--head", type=int, default=0, help="head to draw (default 0)")
    one.add_argument("--png", help="write a PNG to this path instead of printing text")
    one.add_argument("--cell", type=int, default=8, help="PNG pixels per cell (default 8)")
    one.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    one.add_argument("--ascii", action="store_true", help="use '#' and '.' only")
    one.set_defaults(run=_render)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as error:
        print(f"refmask: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
