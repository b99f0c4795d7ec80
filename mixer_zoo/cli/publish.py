"""``mixer-zoo publish``: argument parsing over :mod:`mixer_zoo.tools.publish`."""
from __future__ import annotations

import argparse
import json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="a converted folder (mixer-zoo convert)")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub, NAME being architecture.tag")
    parser.add_argument("--dry-run", action="store_true", help="validate and list what would be uploaded; upload nothing")
    parser.add_argument("--local-cache", action="store_true",
                        help="install into the local huggingface_hub cache ($HF_HUB_CACHE) instead of uploading")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from ..tools.publish import install_in_cache, publish_folder
    from ..util.report import format_table
    from ..weights.hub_cache import PUBLISHED_FILES

    if args.local_cache:
        snapshot = install_in_cache(args.folder, args.repo_id)
        print(f"installed {', '.join(PUBLISHED_FILES)} as {args.repo_id} in the local Hub cache: {snapshot}")
        return 0
    result = publish_folder(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private,
                            commit_message=args.message)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_table(result["files"], ["file", "bytes", "sha256", "needed_to_load", "role"]))
    if args.dry_run:
        print(f"dry run: {len(result['files'])} files validated for {args.repo_id}; nothing uploaded")
    else:
        print(f"uploaded {len(result['files'])} files to {args.repo_id}: {result['commit_url']}")
    return 0
