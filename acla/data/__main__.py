"""``python -m acla.data fetch NAME`` / ``verify [SET ...]`` / ``list``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from acla.data.fetch import ARCHIVES, FetchError, fetch
from acla.data.sets import BUNDLED, DATA_ROOT_VARIABLE, SETS, DataError, available_sets, open_set, resolve_data_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acla.data", description=__doc__)
    parser.add_argument("--data-root", help=f"data root folder (default: ${DATA_ROOT_VARIABLE})")
    verbs = parser.add_subparsers(dest="verb", required=True)
    fetch_parser = verbs.add_parser("fetch", help="download, verify and extract an official archive")
    fetch_parser.add_argument("name", choices=sorted(ARCHIVES), help="archive to fetch")
    verify_parser = verbs.add_parser("verify", help="check sets against the manifest's sha256")
    verify_parser.add_argument("sets", nargs="*", help="set names (default: every set in the manifest)")
    verbs.add_parser("list", help="list the sets the data root holds and the bundled ones")
    args = parser.parse_args(argv)

    try:
        if args.verb == "fetch":
            destination = args.data_root or os.environ.get(DATA_ROOT_VARIABLE)
            if not destination:
                raise DataError(f"fetch needs --data-root or ${DATA_ROOT_VARIABLE} to know where to put the files")
            root = Path(destination).expanduser()
            root.mkdir(parents=True, exist_ok=True)
            print(fetch(ARCHIVES[args.name], root))
            return 0
        root = resolve_data_root(args.data_root)
        if args.verb == "verify":
            for name in args.sets or available_sets(root):
                image_set = open_set(name, root)
                print(f"{image_set.label}: {len(image_set)} files ok")
            return 0
        for name in available_sets(root) + sorted(BUNDLED):
            image_set = open_set(name, root, verify=False)
            tasks = ", ".join(SETS[name].tasks) if name in SETS else "smoke"
            print(f"{image_set.label:32s} {len(image_set):4d} images  {tasks}")
        return 0
    except (DataError, FetchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
