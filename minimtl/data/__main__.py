"""Command line: ``python -m minimtl.data fetch NAME [--url URL | --archive PATH] [--root DIR]``.

``python -m minimtl.data list`` shows the known data sets and whether each is
already under the data root.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from .. import cli
from .base import data_root
from .fetch import DATASETS, _source, fetch

PROG = "python -m minimtl.data"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 bad data, 2 bad usage; see ``minimtl.cli``)."""
    return cli.run(_main, argv, prog=PROG)


def _main(argv: list[str] | None) -> int:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="data root (default: $MINIMTL_DATA or ~/.cache/minimtl/data)")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("fetch", help="download (or take a local archive), verify and extract a data set")
    get.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    where = get.add_mutually_exclusive_group()
    where.add_argument("--url", help="download from this mirror instead of the upstream address")
    where.add_argument("--archive", help="use this local archive instead of downloading")
    get.add_argument("--sha256", help="expected SHA-256, overriding the known one")
    get.add_argument("--no-verify", action="store_true", help="accept a checksum that differs or is unknown")
    get.add_argument("--force", action="store_true", help="extract again even if already present")
    get.add_argument("--delete-archive", action="store_true", help="remove the downloaded archive after extraction")
    get.add_argument("--quiet", action="store_true", help="no progress bars")
    commands.add_parser("list", help="show the known data sets and which are present")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = data_root(arguments.root)
    if root.exists() and not root.is_dir():
        raise cli.UsageError(f"--root {root} is a file: give the folder data sets go in")

    if arguments.command == "list":
        print(f"data root: {root}")
        for source in DATASETS.values():
            present = "present" if (root / source.folder).is_dir() else "absent "
            print(f"  {source.name:<10} {present}  {source.title}  ({source.homepage})")
        return 0

    try:
        _source(arguments.name)
    except ValueError as error:
        raise cli.UsageError(str(error)) from None
    if arguments.archive is not None and not Path(arguments.archive).expanduser().is_file():
        raise cli.UsageError(f"--archive {arguments.archive}: no such file")
    if arguments.url is not None and not arguments.url.startswith(("http://", "https://", "file://")):
        raise cli.UsageError(f"--url must start with http://, https:// or file://, got {arguments.url!r}")
    sha256 = arguments.sha256
    if sha256 is not None and (len(sha256.strip()) != 64 or any(c not in "0123456789abcdef" for c in sha256.strip().lower())):
        raise cli.UsageError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    folder = fetch(arguments.name, root=root, url=arguments.url, archive=arguments.archive,
                   sha256=sha256.strip() if sha256 else None, verify=not arguments.no_verify, force=arguments.force,
                   keep_archive=not arguments.delete_archive, progress=not arguments.quiet)
    print(f"{arguments.name}: ready at {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
