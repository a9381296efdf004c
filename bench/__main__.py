"""`make bench`: run every benchmark, print the table, write results/latest.md and latest.json."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vledger.broker.shm import remove_stale, take_ownership

from . import append, gateway, hosts, ingest, replication, scale, tree, verifier, verify, work
from .fixtures import FULL, QUICK, SCRATCH_ROOT, Sizes
from .report import Environment, Figure, progress, write_results

SECTIONS: dict[str, Callable[[Sizes], list[Figure]]] = {
    "append": append.run,
    "tree": tree.run,
    "verify": verify.run,
    "pow": work.run,
    "ingest": ingest.run,
    "scale": scale.run,
    "replication": replication.run,
    "verifier": verifier.run,
    "gateway": gateway.run,
    "hosts": hosts.run,  # root only (network namespaces): skipped, and said so, without it
}
# Narrower runs of a section's figures, only when named with --only (make bench has them in their section).
NARROW: dict[str, Callable[[Sizes], list[Figure]]] = {
    "catchup": replication.run_catch_up,  # figure 5b alone
    "lag": replication.run_lag,  # figures 5a alone
    "ingest-desk": ingest.run_desk,  # figures 4c-4f alone
    "sweep": verifier.run_sweep,  # figures 6a and 6a-1 alone
    "verify-core": verify.run_core,  # figures 2a and 2b alone
}
RESULTS = Path(__file__).resolve().parent / "results"
PARTIAL = RESULTS / "partial"  # git-ignored: what --only and --quick runs write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        epilog="Beside pyvserv (not a section of make bench): python -m bench.pyvserv, or make bench-pyvserv; "
        "it installs pyvserv 1.1.0 on first use into .venv-pyvserv and writes results/pyvserv.md.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows that every figure is produced")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"folder for latest.md and latest.json (a full run: {RESULTS}; --only or --quick: {PARTIAL})",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted({*SECTIONS, *NARROW}),
        help=(
            "run only this section (repeatable); catchup: figure 5b alone; lag: figures 5a alone; "
            "sweep: 6a and 6a-1; verify-core: 2a and 2b"
        ),
    )
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = "make bench" if not given else " ".join(["python -m bench", *given])
    sizes = QUICK if args.quick else FULL
    # The bench's queues and barriers are named by this process, and what earlier runs killed
    # with their process groups left in /dev/shm is removed.
    take_ownership()
    env = Environment.here(command, SCRATCH_ROOT, args.quick)

    started = time.perf_counter()
    figures: list[Figure] = []
    for name, section in {**SECTIONS, **NARROW}.items():
        if (args.only is None and name in SECTIONS) or (args.only is not None and name in args.only):
            section_started = time.perf_counter()
            figures += section(sizes)
            progress(f"{name}: {time.perf_counter() - section_started:.0f} s")
    progress(f"done in {time.perf_counter() - started:.0f} s")
    # A narrow or quick run must not overwrite the full run's table, which the README cites.
    out = args.out or (RESULTS if args.only is None and not args.quick else PARTIAL)
    print(write_results(out, env, figures), end="")
    remove_stale()  # what the bench's own process-group kills left
    return 0


if __name__ == "__main__":
    sys.exit(main())
