"""``mixer-zoo manifest check``: argument parsing over :mod:`mixer_zoo.tools.manifest_check`."""
from __future__ import annotations

import argparse
import json

from ..weights.manifest import MANIFEST_ENV


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check",), help="check: validate against the schema and cross-check with the code")
    parser.add_argument("--manifest", metavar="PATH", help=f"manifest to check (default: ${MANIFEST_ENV} or the packaged one)")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..tools.catalog import manifest_rows
    from ..tools.manifest_check import check_manifest
    from ..util.report import format_table
    from ..weights.manifest import ManifestError, manifest_path

    target = manifest_path(args.manifest)
    problems = check_manifest(target)
    if not problems:
        rows = manifest_rows(target)
        print(json.dumps(rows, indent=2) if args.json else format_table(rows))
        print(f"{target}: {len(rows)} weights tags, schema valid, consistent with the code")
        return 0
    for p in problems[:-1]:
        print(p)
    raise ManifestError(problems[-1] + (f" ({len(problems)} problems in all)" if len(problems) > 1 else ""))
