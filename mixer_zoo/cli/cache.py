"""``mixer-zoo cache verify [TAG ...]`` / ``mixer-zoo cache clean TAG ...``: argument parsing over
:mod:`mixer_zoo.tools.cache`."""
from __future__ import annotations

import argparse
import json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("verify", "clean"),
                        help="verify: check every cached copy of the tags' files; clean: remove them")
    parser.add_argument("tags", nargs="*", metavar="TAG", help="arch.tag (verify: default every tag; clean: required)")
    parser.add_argument("--hub-cache", metavar="DIR", help="huggingface_hub cache (default: $HF_HUB_CACHE)")
    parser.add_argument("--download-cache", metavar="DIR", help="source downloads (default: $MIXER_ZOO_CACHE)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from ..tools.cache import CORRUPT, clean_cache, verify_cache
    from ..util.report import format_table
    from . import CLIError

    if args.action == "clean":
        if not args.tags:
            raise CLIError("cache clean needs at least one TAG (mixer-zoo cache verify lists what is cached)")
        rows = clean_cache(args.tags, args.hub_cache, args.download_cache)
        print(json.dumps(rows, indent=2) if args.json else format_table(rows) if rows else "nothing cached to remove")
        return 0
    rows = verify_cache(args.tags or None, args.hub_cache, args.download_cache)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, ["tag", "cache", "status", "file", "detail"]))
    bad = [r for r in rows if r["status"] == CORRUPT]
    if bad:
        tags = " ".join(dict.fromkeys(r["tag"] for r in bad))
        raise CLIError(f"{len(bad)} damaged cached file(s), first {bad[0]['file']}: {bad[0]['detail']}; "
                       f"remove them with `mixer-zoo cache clean {tags}` and load or convert again")
    return 0
