"""``mixer-zoo convert-all``: argument parsing over :mod:`mixer_zoo.tools.publish.convert_all`."""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="one folder per tag is written under OUT")
    parser.add_argument("--tags", help="comma-separated arch.tag names (default: every tag with a source)")
    parser.add_argument("--publish", action="store_true", help="upload each folder to its manifest hf_hub_id")
    parser.add_argument("--org", help="publish under ORG/arch.tag instead of the manifest's hf_hub_id")
    parser.add_argument("--dry-run", action="store_true", help="with --publish: validate, upload nothing")
    parser.add_argument("--force", action="store_true", help="convert again even when up to date")
    parser.add_argument("--verify", action="store_true", help="compare each JAX conversion with Flax ([jax] extra)")
    parser.add_argument("--cache-dir", help="download cache for the source files (default: mixer-zoo's)")
    parser.add_argument("--update-manifest", action="store_true",
                        help="record converted.sha256/size_bytes of each converted tag in the manifest")
    parser.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write the summary as CSV")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..tools.publish import convert_all
    from ..util.report import format_table, write_csv, write_json
    from ..weights.hub_cache import WeightsError

    tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
    rows = convert_all(args.out, tags, publish=args.publish, org=args.org, dry_run=args.dry_run, force=args.force,
                       verify=args.verify, cache_dir=args.cache_dir, update_manifest=args.update_manifest,
                       progress=not args.quiet)
    table = [dict(r, sha256=r["sha256"][:12]) for r in rows]
    print(format_table(table, ["tag", "converted", "sha256", "bytes", "published", "error"]))
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        write_csv(args.csv, rows)
    failed = [r for r in rows if r["error"]]
    if failed:
        raise WeightsError(f"{len(failed)} of {len(rows)} tags failed; first: {failed[0]['tag']}: {failed[0]['error']}")
    return 0
