"""vledger: a replicated, tamper-evident public ledger cluster."""

__version__ = "0.1.0"
