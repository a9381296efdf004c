"""The verifier puts back another raiser's vanished operator-only alert verbatim, the
JSON that raiser wrote ({**alert, "reopened_from": raiser}); PUT_BACK_CAP bounds how many, not
how large. A node's Redis user opens operator-only alerts with 40 KB details, in batches each
small enough to be read, and deletes them: the verifier copies them all into its own open hash
(16 MB here; 1,000 x 500 KB = 500 MB), which every reader then reads whole each time (r24 F5's
stall, through the verifier), or, once readers bound a hash's bytes, which hides the verifier's
own findings (r25 F2 again). A put-back needs the alert's fields, each of a bounded size."""

from __future__ import annotations

import json
from typing import Any

from vledger.broker.replication import Alert
from vledger.tests.unit.verifier.test_checks import LEDGER, checks  # noqa: F401 (the fixture)

BATCHES, PER_BATCH = 4, 100
DETAIL = "x" * 5_000  # each of an alert's fields: 4 MB a batch, 16 MB in all


def test_put_backs_of_huge_alerts_keep_the_verifier_s_hash_small_and_its_findings_shown(
    checks: Any,  # noqa: F811
) -> None:
    found, _, _ = checks
    repl = found.replication
    repl.node = "verifier"  # as runtime.replication() makes it: the verifier raises into its own hash
    genuine = Alert("ingest-1", LEDGER, 7, "equivocation", "two roots at 7 (the verifier's own finding)")
    repl.alert(genuine)
    theirs = repl.open_alerts_key_of("replica-3")
    for batch in range(BATCHES):
        fields = ("node", "ledger", "height", "detail", "source", "expected", "found", "at_ms")
        alert = json.dumps({"id": "1-0", "what": "equivocation", **dict.fromkeys(fields, DETAIL)})
        # The key is the raiser's to write as well (a ledger's part of any length): half long ones.
        long = "y" * (20_000 if batch % 2 else 1)
        keys = [f"ingest-1|junk{batch}-{i}{long}|equivocation" for i in range(PER_BATCH)]
        repl.client.hset(theirs, mapping=dict.fromkeys(keys, alert))
        found.refresh_open()  # seen open
        repl.client.delete(theirs)  # replica-3's user may delete its own hash
        found.refresh_open()  # put back into the verifier's own hash
    put_back = repl.client.hgetall(repl.open_alerts_key)
    assert len(put_back) > BATCHES * PER_BATCH // 2  # put back or counted (PUT_BACK_CAP is 1,000)
    size = sum(len(key) + len(value) for key, value in put_back.items())
    # 1,000 put-backs (PUT_BACK_CAP) must stay well within what a reader reads of a hash.
    assert size < 2 * 2**20, f"the verifier's own open hash holds {size} bytes of put-back alerts"
    assert genuine.key in repl.open_alerts(), "the verifier's own equivocation is no longer shown"
