"""What the commands print on stdout: a line per ledger for people, one JSON object for scripts.

Failures name the ledger, the height and the error code; ``--json`` carries the same facts
in the shape scripts rely on (``{"ledgers": [...], "ok": ..., "error": ...}``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..node.errors import RecordError, VledgerError
from ..node.json_values import jsonable

if TYPE_CHECKING:  # the commands' modules are imported when their command runs (see cli.COMMANDS)
    from .cluster_demo import ClusterDemoRun
    from .demo import DemoRun
    from .exporting import ExportSummary
    from .verification import LedgerReport, Verification

# A ledger entry's error code when records no checkpoint vouches for fail the run (PROTOCOL 12.6).
UNVOUCHED = "unvouched"
# Records a rule flags, shown a ledger: a forged ledger may hold millions; the count says how many.
SHOWN_VIOLATIONS = 20
LISTED_VIOLATIONS = 1000  # in --json: as many as a rules verdict keeps (tools/rules_check.py)


def print_verification(source: str, result: Verification, *, as_json: bool) -> None:
    if as_json:
        _print_json(verification_json(result))
        return
    for line in [*_report_lines(source, result), *_rules_lines(result), *_cosignature_lines(result),
                 *_unvouched_lines(result), _verdict(result)]:  # fmt: skip
        print(line)


def print_import(source: str, result: Verification, *, as_json: bool) -> None:
    if as_json:
        value = verification_json(result)
        for entry, report in zip(value["ledgers"], result.reports, strict=True):
            entry.update(imported=report.imported if result.ok else 0, present=report.present, kept=report.kept)
        _print_json(value)
        return
    if not result.ok:
        for line in _report_lines(source, result):
            print(line)
        print("import FAILED: nothing was imported")
        return
    for report in result.reports:
        print(
            f"{report.ledger}: {report.imported} imported, {report.present} already present, "
            f"{report.kept} checkpoints kept (of {report.checkpoints} verified), head {_head(report)}"
        )
    for line in _cosignature_lines(result):
        print(line)
    # Rows added to the store, not lines verified: a line held already, or twice in the file, adds none.
    kept = sum(r.kept for r in result.reports)
    print(f"imported {sum(r.imported for r in result.reports)} records and kept {kept} checkpoints")


def print_export(summary: ExportSummary) -> None:
    """Only for a file: on stdout the export itself is the output."""
    if summary.output is not None:
        print(f"exported {summary.records} records of {summary.ledgers} ledgers to {summary.output}")


def print_demo(run: DemoRun) -> None:
    from .demo import DEMO_NODE  # noqa: PLC0415 - see cli.COMMANDS

    directory, result = run.directory, run.verification
    created = f"created {', '.join(run.created)}" if run.created else "reopened its ledgers"
    rate = run.appended / run.seconds if run.seconds > 0 else 0.0
    print(f"Store {directory} (node {DEMO_NODE}): {created}.")
    print(
        f"Appended {run.appended} records in {run.seconds:.1f} s: proof of work at {rate:.1f} records/s"
        f" (about {run.hashes / max(run.seconds, 1e-9) / 1e6:.2f} M hashes/s on {run.processes} processes)."
    )
    print()
    width = max((len(r.ledger) for r in result.reports), default=0)
    for report in result.reports:
        verdict = "verified: OK" if report.ok else _failure_line(report)
        print(f"  {report.ledger:<{width}}  {report.records:>6} records  head {_head(report, 16)}  {verdict}")
    print(f"\nVerified {sum(r.records for r in result.reports)} records in {run.verify_seconds:.2f} s.")
    print("\nTry next:")
    print(f"  vledger verify {directory}")
    print(f"  vledger export {directory} -o {directory}.jsonl")
    print(f"  vledger verify {directory}.jsonl")
    print(f"  vledger import {directory}.jsonl --store {directory}-copy")


def print_cluster_demo(run: ClusterDemoRun) -> None:
    """The end of a cluster demo (its start was said as it began: the cluster, the voters)."""
    from .client_payloads import money_text  # noqa: PLC0415 - see cli.COMMANDS
    from .cluster_demo import ELECTION, KINDS, LEDGERS  # noqa: PLC0415
    from .tally_command import report_lines  # noqa: PLC0415

    written = sum(run.written.values())
    rate = written / run.seconds if run.seconds > 0 else 0.0
    print(f"Wrote {written:,} records in {run.seconds:.1f} s ({rate:.1f} records/s):")
    width = max(len(ledger) for ledger in LEDGERS)
    for ledger in LEDGERS:
        kinds = ", ".join(f"{run.written[ledger, kind]:,} {kind}" for kind in KINDS if run.written[ledger, kind])
        print(f"  {ledger:<{width}}  {kinds or 'nothing'}")

    print(
        "\nRead back from their home nodes, each record checked as the next of its chain, replayed through the rules:"
    )
    for chain in run.chains:
        refused = f"{len(chain.violations)} records break the rules" if chain.violations else "no rule broken"
        print(
            f"  {chain.ledger:<{width}}  {chain.node}  {chain.records:>7,} records  head {chain.head.hash.hex()[:16]}…"
            f"  {refused}"
        )

    tally = run.election
    print(f"\n{ELECTION}, recounted from its chain:")
    for choice, votes in tally.counts.items():
        print(f"  {choice:<12} {votes:>7,}")
    verdict = "the same as before this run plus what it wrote" if run.tally_matches else f"NOT {run.expected}"
    print(
        f"  {tally.cast:,} votes counted of {tally.registered:,} voters registered, {tally.withdrawn:,} withdrawn: "
        f"{verdict}"
    )
    charity = run.charity
    print(
        f"zakat: donated {money_text(charity.donated, charity.currency)}, "
        f"disbursed {money_text(charity.disbursed, charity.currency)}, "
        f"balance {money_text(charity.balance, charity.currency)}, "
        f"in {len(charity.funds)} funds"
    )
    resources = run.resources
    balances = ", ".join(f"{account} {amount:,}" for account, amount in resources.balances.items())
    print(f"resources ({resources.unit}): {resources.issued:,} issued; balances: {balances or 'none'}")

    if run.replication:
        print(f"\nReplication (Redis holder heights, {run.replication_seconds:.1f} s after the last write):")
        for view in run.replication:
            counts = ", ".join(f"{n:,} records held by {count} nodes" for count, n in sorted(view.counts.items()))
            missing = [node for node in view.replicas if view.held.get(node, -1) < view.size - 1]
            state = f"replicas behind: {', '.join(missing)}" if missing else f"on all {len(view.replicas)} replicas"
            print(f"  {view.ledger:<{width}}  {counts}; {state}")

    if run.tallies:
        print("\nThe observers' signed tallies (vledger tally), each signature checked:")
        for report in run.tallies:
            for line in report_lines(report):
                print(f"  {line}")

    for verifier in run.verifiers:
        if not verifier.answered:
            print(f"\nThe verifier {verifier.node} did not answer.")
            continue
        checked = "every new record checked on every copy" if verifier.checked else "NOT every record checked yet"
        alerts = ", ".join(verifier.open_alerts) if verifier.open_alerts else "0 open alerts"
        swept = f"{verifier.swept} of {verifier.copies} copies swept from genesis since the last write"
        print(f"\nThe verifier {verifier.node}: {checked}; {swept}; {alerts}.")

    if run.checkpoints:
        print("\nLatest checkpoints (signed with the key each genesis pins), and the witnesses that cosigned them:")
        for cp in run.checkpoints:
            names = f" ({', '.join(cp.witnesses)})" if cp.witnesses else ""
            print(
                f"  {cp.ledger:<{width}}  size {cp.size:,}  root {cp.root.hex()[:16]}…  "
                f"{len(cp.witnesses)} cosignature{'s' if len(cp.witnesses) != 1 else ''}{names}"
            )
    if run.receipt is not None:
        r = run.receipt
        print(f"\nA voter's receipt ({r.ledger} height {r.index}, a {r.kind}), as vledger receipt get writes it:")
        for line in r.data.decode("utf-8", "replace").splitlines():
            print(f"  {line}")
        verdict = (
            f"valid: in the tree of size {r.size:,}, cosigned by {len(r.witnesses)} witnesses"
            if r.verified is None
            else f"REFUSED: {r.verified}"
        )
        print(
            "  checked offline with the genesis record and the cluster's keys "
            f"(vledger receipt verify --genesis G $(vledger receipt keys)): {verdict}"
        )

    print("\nEach node's store verified read-only, from every genesis (as vledger verify does):")
    for node, path, result in run.stores:
        print(f"  {node}  {path}")
        for line in _report_lines(str(path), result):
            print(f"    {line}")
    print("\nAll OK." if run.ok else f"\nFAILED: {'; '.join(run.failures)}.")


def verification_json(result: Verification) -> dict[str, Any]:
    return {
        "ledgers": [_ledger_json(r, result.require_checkpoint) for r in result.reports],
        "ok": result.ok,
        "error": _error_json(result.error, None, result.error_line) if result.error is not None else None,
        # Whether records past a ledger's largest checkpoint fail the whole (--require-checkpoint, --witness).
        "require_checkpoint": result.require_checkpoint,
        "tree_unchecked": result.tree_unchecked,  # (store) why its Merkle tree was not checked, or null
        # (store) the -wal whose commits were read with the file (a copy taken with it), or null.
        "wal": None if result.wal_read is None else {"file": result.wal_read[0], "bytes": result.wal_read[1]},
        # Whether the checkpoints' cosignatures were checked at all (with --witness keys), and how many.
        "cosignatures": {
            "witness_keys": result.witness_keys,
            "checked": sum(r.cosigned for r in result.reports),
            "unchecked": sum(r.unchecked for r in result.reports),
        },
        # Whether the observers' rules judged the records (not with --no-rules), and whether an
        # admin ledger in the copy judged grants and admin authors too.
        "rules": {"checked": result.rules, "grants_judged": result.grants_judged},
    }


def _ledger_json(report: LedgerReport, require_checkpoint: bool = False) -> dict[str, Any]:
    """A ledger's entry; with ``require_checkpoint``, records no checkpoint vouches for fail it
    as they fail the run (``"ok"`` false, the error ``unvouched``): the entry said true while
    the run exited 1 for that very ledger (outsider o8)."""
    error = _error_json(report.error, report.error_height, report.error_line) if report.error is not None else None
    flagged = report.rules.violations if report.rules is not None else []
    if error is None and flagged:  # the first record the observers flag, as a chain's first failure
        error = _error_json(flagged[0].error, flagged[0].height, None)
    if error is None and require_checkpoint and report.unvouched:
        error = {"code": UNVOUCHED, "height": report.vouched, "line": None, "message": _unvouched_what(report)}
    return {
        "ledger": report.ledger,
        "records": report.records,
        "head": report.head.hex() if report.head is not None else None,
        "checkpoints": report.checkpoints,
        # The size of its largest checkpoint that verified (0: none), and its records past it,
        # which nothing in the copy vouches for: a tail cut with its checkpoint lines looks whole.
        "vouched": report.vouched,
        "unvouched": report.unvouched,
        "cosignatures": {"checked": report.cosigned, "unchecked": report.unchecked},
        "ok": error is None,
        "error": error,
        "rules": _rules_json(report),
    }


def _rules_json(report: LedgerReport) -> dict[str, Any] | None:
    """What the observers' rules found in the ledger (null: not judged): the heights judged, each
    record flagged (the first LISTED_VIOLATIONS; ``flagged`` counts them all), the height its
    judging waits at for a grant on its way (or null) and the tally they count with its
    ``counted`` hash (PROTOCOL 11.2; null for a ledger without domain rules)."""
    if report.rules is None:
        return None
    rules = report.rules
    return {
        "judged": rules.judged,
        "flagged": rules.flagged,
        "violations": [_error_json(v.error, v.height, None) for v in rules.violations[:LISTED_VIOLATIONS]],
        "waiting": rules.waiting,
        "tally": None if rules.tally is None else jsonable(rules.tally),
        "counted": None if rules.counted is None else rules.counted.hex(),
    }


def _error_json(error: VledgerError, height: int | None, line: int | None) -> dict[str, Any]:
    """An error of a report; ``line`` is the export line it was found on (null in a store)."""
    return {"code": error.code, "height": height, "line": line, "message": _reason(error)}


def _reason(error: VledgerError) -> str:
    """The sentence without the "ledger ... height ...:" prefix, which a report prints itself."""
    return error.reason if isinstance(error, RecordError) else error.message


def _report_lines(source: str, result: Verification) -> list[str]:
    lines = []
    for report in result.reports:
        if report.ok:
            plural = "" if report.checkpoints == 1 else "s"
            checked = f", {report.checkpoints} checkpoint{plural}" if report.checkpoints else ""
            if report.cosigned:
                checked += f" ({report.cosigned} cosignature{'' if report.cosigned == 1 else 's'} verified)"
            lines.append(f"{report.ledger}: OK, {report.records} records{checked}, head {_head(report)}")
        elif report.error is None:  # its records verified; the rules' lines say what they flag
            lines.append(f"{report.ledger}: {report.records} records verified, head {_head(report)}")
        else:
            lines.append(_failure_line(report))
    if result.wal_read is not None:
        lines.append(
            f"{source}: its {result.wal_read[0]} ({result.wal_read[1]:,} bytes) was read: the commits in it"
            " were verified with the file's, and nothing was written beside them"
        )
    if result.tree_unchecked is not None:
        lines.append(f"{source}: Merkle tree NOT checked: {result.tree_unchecked}")
    if result.error is not None:
        lines.append(f"{source}: FAILED [{result.error.code}]: {result.error.message}")
    return lines


def _rules_lines(result: Verification) -> list[str]:
    """What the observers' rules found, ledger by ledger: the records they flag (not counted), a
    grant they still wait for, the tally they count; and what was not judged."""
    if not result.rules:
        return ["rules NOT judged (--no-rules): a record the observers flag passes"] if result.reports else []
    lines = []
    for report in result.reports:
        rules = report.rules
        if rules is None:
            continue
        if rules.violations:
            count = rules.flagged
            lines.append(
                f"{report.ledger}: FAILED the rules: {count} record{'' if count == 1 else 's'} the observers flag "
                f"and do not count"
            )
            lines.extend(
                f"  height {v.height} [{v.error.code}]: {_reason(v.error)}" for v in rules.violations[:SHOWN_VIOLATIONS]
            )
            if count > SHOWN_VIOLATIONS:
                lines.append(f"  ... and {count - SHOWN_VIOLATIONS} more (--json lists {LISTED_VIOLATIONS})")
        if rules.waiting is not None:
            lines.append(
                f"{report.ledger}: rules judged up to height {rules.waiting}: the grant rule refuses it by the admin "
                "records this copy holds, and it was accepted after them within grant_wait_ms of now: the "
                "observers wait for a grant on its way (verify again later, or with a newer admin ledger)"
            )
        if rules.tally is not None:
            tally = json.dumps(jsonable(rules.tally), ensure_ascii=False, sort_keys=True)
            lines.append(f"{report.ledger}: tally of its {rules.judged} heights, as the observers count it: {tally}")
    if not result.grants_judged and any(r.rules is not None for r in result.reports):
        lines.append("grants and admin authors NOT judged: the copy holds no admin ledger")
    return lines


def _cosignature_lines(result: Verification) -> list[str]:
    """What was not checked of the checkpoints' cosignatures, if anything: a reader must not
    take "OK" for "the witnesses' signatures verified"."""
    unchecked = sum(r.unchecked for r in result.reports)
    if not unchecked:
        return []
    lines = "line" if unchecked == 1 else "lines"
    if not result.witness_keys:
        return [
            f"cosignatures NOT checked: {unchecked} cosignature {lines}, and no --witness key given "
            "(`vledger receipt keys` prints a cluster's)"
        ]
    return [f"cosignatures: {unchecked} {lines} by witnesses no --witness key names, NOT checked"]


def _unvouched_lines(result: Verification) -> list[str]:
    """The ledgers whose newest records no checkpoint vouches for: "OK" says their chain is
    sound, not that it is whole (a backup cut together with its checkpoint lines verifies)."""
    lines = []
    for report in result.reports:
        if not report.unvouched:
            continue
        lines.append(f"{report.ledger}: {_unvouched_what(report)}; its newest records may be missing unseen")
    if lines and not result.require_checkpoint:
        lines.append("(with --require-checkpoint or a --witness key, that fails the verification)")
    return lines


def _unvouched_what(report: LedgerReport) -> str:
    """What of ``report``'s ledger no checkpoint vouches for."""
    if report.vouched == 0:
        return f"no checkpoint: its {report.records} records are vouched for by nothing"
    plural = "" if report.unvouched == 1 else "s"
    return (
        f"{report.unvouched} record{plural} past its largest checkpoint (size {report.vouched}): vouched for by nothing"
    )


def _failure_line(report: LedgerReport) -> str:
    assert report.error is not None
    return (
        f"{report.ledger}: FAILED at height {report.error_height} [{report.error.code}]: {_reason(report.error)}"
        f" ({report.records} records before it verified)"
    )


def _verdict(result: Verification) -> str:
    if not result.reports and result.error is None:
        return "no ledgers to verify"
    failed = sum(not r.ok for r in result.reports)
    if failed == 0 and result.error is None and (unvouched := result.unvouched()):
        return (
            f"verification FAILED: {len(unvouched)} of {len(result.reports)} ledgers with records past their"
            " largest checkpoint"
        )
    if result.ok:
        return f"verified: OK ({len(result.reports)} ledgers, {sum(r.records for r in result.reports)} records)"
    if result.error is not None:
        return "verification FAILED: the file is damaged"
    return f"verification FAILED: {failed} of {len(result.reports)} ledgers"


def _head(report: LedgerReport, length: int | None = None) -> str:
    """The head hash in hex, or its first ``length`` characters and an ellipsis; "-" if none."""
    if report.head is None:
        return "-"
    text = report.head.hex()
    return text if length is None else text[:length] + "…"


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, ensure_ascii=False))
