"""vledger's public client library: read a cluster over CURVE or its gateway's HTTP, verified.

    from vledger.client import Client

    with Client.http("http://127.0.0.1:8480/", genesis={"election-2026": genesis_bytes}) as client:
        checkpoint = client.checkpoint("election-2026")      # signature, cosignatures, consistency
        proven = client.record("election-2026", 5)           # own checks + inclusion proof
        mine = client.voter_records("election-2026", "E-0123456789abcdef")

Every call verifies before it returns and raises an error of :mod:`vledger.node.errors`
(its ``code`` is one of docs/PROTOCOL.md's table) at the first check that fails. See
:class:`Client` for each call, and README "Python client".
"""

from typing import TYPE_CHECKING

from ..node.errors import VledgerError
from ..node.note import VerifiedCheckpoint
from ..node.receipt import Receipt
from ..node.record import Record
from .state import TrustedState
from .voters import VoterCheck, VoterRecord
from .write import Write

if TYPE_CHECKING:
    from .api import Client, FollowEvent, ObserverCount, ProvenRecord, TallyCheck, Trust, WriteReceipt, observer_key

# The names of .api, imported when one is first asked for: .api reads gateways and the observers'
# tallies (Redis), which the `vledger` CLI, importing .session (and so this file), does not.
_API = frozenset(
    ("Client", "FollowEvent", "ObserverCount", "ProvenRecord", "TallyCheck", "Trust", "WriteReceipt", "observer_key")
)


def __getattr__(name: str) -> object:
    if name in _API:
        from . import api  # noqa: PLC0415 - see _API

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Client",
    "FollowEvent",
    "ObserverCount",
    "ProvenRecord",
    "Receipt",
    "Record",
    "TallyCheck",
    "Trust",
    "TrustedState",
    "VerifiedCheckpoint",
    "VledgerError",
    "VoterCheck",
    "VoterRecord",
    "Write",
    "WriteReceipt",
    "observer_key",
]
