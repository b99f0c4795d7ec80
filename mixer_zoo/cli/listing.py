"""``mixer-zoo list``: what the zoo holds, as a table (or JSON)."""
from __future__ import annotations

import argparse
import json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..tools.catalog import architecture_rows
    from ..util.report import format_table

    rows = architecture_rows()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
