"""Review r29 (1f528a16): a second-factor session that ran out is traded again with the code
typed then, but only by the Reader that opened it (``_in_session``). The demo's other sessions
are handed the first one's token (share_second_factor), and an admin may give a token as the
code (--otp TOKEN / $VLEDGER_OTP): those Readers, once it runs out, keep the typed code as the
code and send it used up with each later admin command, each refusal a guess counted against
the admin; five lock it out (the r28 defect, still there for them)."""

from __future__ import annotations

from typing import Any

from vledger.client.session import Reader
from vledger.node import totp
from vledger.node.errors import RemoteError
from vledger.tests.unit.tools.test_cluster_demo_otp_on_a_terminal import Gate, Node
from vledger.tools.cluster_demo import share_second_factor


def test_every_demo_session_trades_a_code_again_when_the_shared_session_ran_out() -> None:
    gate = Gate()
    readers = [Reader(Node(gate)) for _ in range(3)]  # type: ignore[arg-type]
    asked: list[str] = []

    def ask() -> str:
        asked.append(gate.next_code())
        return asked[-1]

    share_second_factor(readers, None, ask)  # type: ignore[arg-type]  # `vledger demo --cluster` on a tty
    for reader in readers:
        reader.call("account.add", {})
    gate.sessions.clear()  # the demo's one session ran out (two minutes)
    for reader in readers:
        for _ in range(totp.MAX_CODE_FAILURES + 2):
            reader.call("account.add", {})
    assert gate.failures == 0, "a used code was sent again: each one a guess counted against the admin"
    assert len(asked) == 1 + len(readers)  # the first code, then one a session when it ran out


def test_a_session_given_as_the_code_is_traded_again_when_it_ran_out() -> None:
    gate = Gate()
    opener = Reader(Node(gate))  # type: ignore[arg-type]
    opener.second_factor(gate.next_code(), None)
    opener.second_factor_session()
    token = opener.otp
    assert token is not None and totp.is_session(token)
    asked: list[str] = []

    def ask() -> str:
        asked.append(gate.next_code())
        return asked[-1]

    reader = Reader(Node(gate))  # type: ignore[arg-type]
    reader.second_factor(token, ask)  # vledger ... --otp TOKEN on a terminal
    reader.call("account.add", {})
    gate.sessions.clear()
    for _ in range(totp.MAX_CODE_FAILURES + 2):
        reader.call("account.add", {})
    assert gate.failures == 0, "a used code was sent again: each one a guess counted against the admin"
    assert len(asked) == 1


class SessionNode(Node):
    """As the node: a session token opens no other session (SecondFactors.open_session)."""

    def call(self, cmd: str, args: dict[str, Any], node: object = None) -> dict[str, Any]:
        otp = args.get("otp")
        if cmd == "totp.session" and isinstance(otp, str) and totp.is_session(otp):
            self.gate.check(otp)
            raise RemoteError("bad_second_factor", "wrong, expired or already used", {})
        return super().call(cmd, args, node)


def test_the_shells_second_ledger_create_opens_its_session() -> None:
    # `vledger shell`: one pooled Session for every command (tools/shell.py, SessionPool); each
    # command sets its second factor afresh (with_session: no --otp, a terminal), and
    # `ledger create` trades the code for a session (second_factor_session). The second time,
    # the Reader is still "in a session" from the first: its totp.session refused for want of a
    # code, the typed code is traded for a session, and then totp.session is sent again with
    # that session token, which no node takes: the command fails, bad_second_factor.
    gate = Gate()
    reader = Reader(SessionNode(gate))  # type: ignore[arg-type]
    asked: list[str] = []

    def ask() -> str:
        asked.append(gate.next_code())
        return asked[-1]

    for _ in range(2):  # two `ledger create` in one shell
        reader.second_factor(None, ask)
        reader.second_factor_session()
        reader.call("grant.add", {})
        reader.call("ledger.create", {})
    assert gate.failures == 0
    assert len(asked) == 2  # one code a command
