"""Who holds a kind that moves votes or money before a ledger exists (PROTOCOL 16.2), as the home
judges a genesis at ledger.create."""

from __future__ import annotations

import pytest

from vledger.node.errors import AlreadyGrantedError
from vledger.node.rules.admin import Grants
from vledger.node.rules.moving_kinds import refuse_other_holders

CHARITY = {"type": "charity", "currency": "SAR"}


def table(*grants: tuple[str, str, str, bool]) -> list[tuple[str, str, list[str]]]:
    held = Grants()
    for accepted, (ledger, kind, account, granted) in enumerate(grants):
        held.add(ledger, kind, account, granted, accepted)
    return held.table()


def test_another_account_s_grant_of_a_moving_kind_or_of_every_kind_is_refused() -> None:
    with pytest.raises(AlreadyGrantedError, match="mallory holds 'disbursement' on fund"):
        refuse_other_holders(table(("fund", "disbursement", "mallory", True)), "fund", CHARITY, "admin")
    with pytest.raises(AlreadyGrantedError, match="mallory holds 'donation'; mallory holds 'disbursement'"):
        refuse_other_holders(table(("fund", "*", "mallory", True)), "fund", CHARITY, "admin")


@pytest.mark.parametrize(
    ("grants", "rules"),
    [
        ((), CHARITY),
        ((("fund", "donation", "admin", True),), CHARITY),  # the creator's own
        ((("fund", "donation", "mallory", True), ("fund", "donation", "mallory", False)), CHARITY),  # revoked
        ((("other", "donation", "mallory", True),), CHARITY),  # another ledger's
        ((("fund", "note", "mallory", True),), CHARITY),  # a kind that moves nothing
        ((("fund", "note", "mallory", True),), {}),  # a plain ledger
        ((("fund", "issue", "mallory", True),), {"type": "resources", "unit": "kg", "issuers": []}),
    ],
)
def test_no_other_holder_of_a_moving_kind_is_no_refusal(
    grants: tuple[tuple[str, str, str, bool], ...], rules: dict[str, object]
) -> None:
    refuse_other_holders(table(*grants), "fund", rules, "admin")
