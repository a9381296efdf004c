"""(review r23 F3) with Redis taking connections and never answering at start
(a host gone without a RST, a paused server), Witness.start now reads each ledger's own published
note in turn (ce0e035), each read failing only after the client's timeout (NODE_REDIS_TIMEOUT, 2 s
in a node): a witness of N ledgers starts N timeouts late, and the replica's follower starts
after it (ingest/replica.py: witness.start() before follower.start()). Before, start asked Redis
once (_publish stops at the first failure)."""

from __future__ import annotations

import socket
from pathlib import Path

from vledger.broker.redis_server import connect
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.ingest.witness import Witness
from vledger.node.checkpoint_log import COSIGNED
from vledger.node.store import ChainStore
from vledger.node.witness import WitnessSigner

from .test_witness import HOME, NAME, WITNESS_KEY, chain  # noqa: F401 (fixtures)


def test_a_witness_asks_a_silent_redis_once_at_start_not_once_a_ledger(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # connections are taken by the kernel, nothing ever answers
    port = silent.getsockname()[1]
    asked: list[str] = []
    try:
        with ChainStore(tmp_path / "store") as store:
            signer = WitnessSigner(NAME, WITNESS_KEY.seed)
            for i in range(5):
                ledger = f"ledger-{i}"
                note = signer.cosign(HOME.sign(ledger, 1, bytes(32)), 1_790_000_000)
                store.checkpoints.keep(ledger, COSIGNED, 1, bytes(32), note)
            repl = ReplicationLedger(connect(f"redis://127.0.0.1:{port}", timeout=0.2))
            read = repl.cosignatures

            def spy(ledger: str, names: list[str] | None = None) -> dict[str, bytes]:
                asked.append(ledger)
                return read(ledger, names) if names is not None else read(ledger)

            repl.cosignatures = spy  # type: ignore[method-assign]
            alerts: list[Alert] = []
            witness = Witness("replica-1", store, signer, repl, alerts.append)
            witness.start()
            assert len(asked) <= 1, f"asked a silent Redis {len(asked)} times, a timeout each: {asked}"
    finally:
        silent.close()
