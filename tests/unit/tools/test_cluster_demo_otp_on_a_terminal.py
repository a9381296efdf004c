"""`vledger demo --cluster` on a terminal without --otp (f424c242, o18 F4).

The demo's sessions get ``ask`` (stdin is a tty) but, with no code given, nothing is traded
for a second-factor session: the code typed for the first admin command is sent again with
the next one, where it is used up (a code is good once, on every node), refused as a wrong
code (a failure counted in Redis) and another asked for. After MAX_CODE_FAILURES refusals the
admin is locked out for the window, a good code included, and the demo fails."""

from __future__ import annotations

from typing import Any

import pytest

from vledger.client.session import Reader
from vledger.node import totp
from vledger.node.errors import RemoteError
from vledger.tools.cluster_demo import share_second_factor


class Gate:
    """The nodes' second factor as ingest/second_factor.py keeps it, shared by every node
    (Redis): each code is good once, a refused code counts, a session is good on any node."""

    def __init__(self) -> None:
        self.step = 0  # the authenticator's code: a new one each time the admin reads it
        self.used: set[str] = set()
        self.failures = 0
        self.sessions: set[str] = set()

    def next_code(self) -> str:
        self.step += 1
        return f"{self.step:06d}"

    def check(self, otp: str | None) -> None:
        if otp is None:
            raise RemoteError("second_factor_required", "a code", {})
        if totp.is_session(otp):
            if otp not in self.sessions:
                raise RemoteError("bad_second_factor", "wrong", {})
            return
        if self.failures >= totp.MAX_CODE_FAILURES or otp in self.used:
            self.failures += 1
            raise RemoteError("bad_second_factor", "wrong, expired or already used", {})
        self.used.add(otp)


class Node:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.done: list[str] = []

    def call(self, cmd: str, args: dict[str, Any], node: object = None) -> dict[str, Any]:
        self.gate.check(args.get("otp"))
        if cmd == "totp.session":
            token = totp.new_session()
            self.gate.sessions.add(token)
            return {"session": token, "expires_ms": 120_000}
        self.done.append(cmd)
        return {}


@pytest.mark.parametrize("commands", [3, 8])
def test_demo_on_a_terminal_asks_one_code_and_burns_no_guess(commands: int) -> None:
    gate = Gate()
    nodes = [Node(gate), Node(gate), Node(gate)]
    readers = [Reader(node) for node in nodes]  # type: ignore[arg-type]
    asked: list[str] = []

    def ask() -> str:
        asked.append(gate.next_code())
        return asked[-1]

    share_second_factor(readers, None, ask)  # type: ignore[arg-type]  # `vledger demo --cluster` on a tty
    for reader in readers:
        for _ in range(commands):
            reader.call("account.add", {})
    assert all(len(node.done) == commands for node in nodes)
    assert gate.failures == 0, "the demo sent a used code: each one a guess counted against the admin"
    assert len(asked) == 1, f"{len(asked)} codes asked of the admin for one demo run"


def test_a_session_that_ran_out_is_opened_again_with_the_one_code_typed() -> None:
    # Review r28: a verb's session expired (two minutes), the code typed then was kept as the
    # code and sent again with each later command: used up, refused, each refusal a guess.
    gate = Gate()
    reader = Reader(Node(gate))  # type: ignore[arg-type]
    asked: list[str] = []

    def ask() -> str:
        asked.append(gate.next_code())
        return asked[-1]

    reader.second_factor(ask(), ask)
    reader.second_factor_session()
    reader.call("account.add", {})
    gate.sessions.clear()  # the session ran out
    for _ in range(totp.MAX_CODE_FAILURES + 2):
        reader.call("account.add", {})
    assert gate.failures == 0, "a used code was sent again: each one a guess counted against the admin"
    assert len(asked) == 2  # the first code, and one when the session ran out
