"""vledger's benchmarks: `make bench` prints each speed figure beside a ceiling measured in the same run.

The machines are shared and noisy, so a figure alone says little: each one is printed with the
rate (or time) of the barest loop that does the same work here and now, and the ratio between
them. Timed tests never assert speed; this package shows it.

Not part of the installed package: it imports ``vledger`` and is run from the repository root
as ``python -m bench``.
"""
