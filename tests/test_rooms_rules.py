"""Room rules as a table: who may enter when, and what the room's state is."""

from __future__ import annotations

import pytest

from session_server.auth import ROLE_PERMISSIONS, Identity, Permission, Role
from session_server.bookings.model import Booking, BookingStatus
from session_server.errors import DomainError
from session_server.rooms import rules

START, END = 1_800_000_000, 1_800_003_600


def booking(status: BookingStatus = BookingStatus.CONFIRMED) -> Booking:
    return Booking(id="b1", practitioner_id="p1", client_id="c1", starts_at=START, ends_at=END, status=status,
                   currency="DZD", client_total=1, practitioner_share=1, platform_share=0, discount=0,
                   code="", created_at=0, timezone="Africa/Algiers")


def who(role: Role, sub: str, grants: frozenset[Permission] | None = None) -> Identity:
    return Identity(sub=sub, name=sub, role=role, permissions=grants or ROLE_PERMISSIONS[role], grants=None,
                    expires_at=0)


WIN = rules.window(booking(), open_before_s=600, grace_after_s=900)


def test_the_room_opens_before_the_start_and_closes_after_the_grace_period() -> None:
    assert (WIN.opens_at, WIN.closes_at) == (START - 600, END + 900)
    assert not WIN.is_open(START - 601) and WIN.is_open(START - 600) and not WIN.is_open(END + 900)


@pytest.mark.parametrize(("identity", "status", "now", "outcome"), [
    (who(Role.CLIENT, "c1"), BookingStatus.CONFIRMED, START - 600, "client"),
    (who(Role.PRACTITIONER, "p1"), BookingStatus.IN_SESSION, END + 899, "practitioner"),
    (who(Role.SUPPORT, "s9"), BookingStatus.CONFIRMED, START, "support"),
    (who(Role.ADMIN, "a1"), BookingStatus.CONFIRMED, START, "admin"),
    (who(Role.CLIENT, "c2"), BookingStatus.CONFIRMED, START, "not_a_party"),
    (who(Role.PRACTITIONER, "c1"), BookingStatus.CONFIRMED, START, "not_a_party"),
    (who(Role.CLIENT, "c1"), BookingStatus.CONFIRMED, START - 601, "room_not_open"),
    (who(Role.CLIENT, "c1"), BookingStatus.CONFIRMED, END + 900, "room_closed"),
    (who(Role.CLIENT, "c1"), BookingStatus.CANCELLED, START, "room_closed"),
    (who(Role.CLIENT, "c1"), BookingStatus.COMPLETED, START, "room_closed"),
    (who(Role.CLIENT, "c1", frozenset({Permission.CHAT_SEND})), BookingStatus.CONFIRMED, START,
     "permission_denied"),
])
def test_who_may_enter(identity: Identity, status: BookingStatus, now: int, outcome: str) -> None:
    try:
        got = rules.admit(identity, booking(status), WIN, now).value
    except DomainError as exc:
        got = exc.code
    assert got == outcome


def test_a_missing_booking_has_no_room_and_a_stranger_learns_nothing_more() -> None:
    with pytest.raises(DomainError) as info:
        rules.admit(who(Role.CLIENT, "c1"), None, None, START)
    assert info.value.code == "room_not_found"


@pytest.mark.parametrize(("present", "state"), [
    ([], "empty"), (["support"], "empty"), (["client"], "waiting_for_practitioner"),
    (["practitioner", "admin"], "waiting_for_client"), (["client", "practitioner"], "in_session"),
])
def test_room_state_follows_who_is_present(present: list[str], state: str) -> None:
    assert rules.room_state(present).value == state


def test_only_the_parties_receive_health_data_and_exchange_media() -> None:
    assert [r for r in Role if rules.receives_health_data(r)] == [Role.CLIENT, Role.PRACTITIONER]
    assert rules.media_peer(Role.CLIENT, booking()) == "p1"
    assert rules.media_peer(Role.PRACTITIONER, booking()) == "c1"
    assert rules.media_peer(Role.SUPPORT, booking()) is None
