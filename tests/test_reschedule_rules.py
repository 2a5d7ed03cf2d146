"""The pure rules of free reschedules: which verdicts get an offer, its terms, and which times it allows."""

from __future__ import annotations

import pytest

from session_server.bookings.errors import TooSoon
from session_server.events import Event
from session_server.notifications.rules import notifications_for
from session_server.reschedule.errors import OfferExpired, OfferUsed, OutsideOffer
from session_server.reschedule.rules import (
    Choice,
    Offer,
    OfferReason,
    OfferStatus,
    Terms,
    check_open,
    check_proposals,
    check_start,
    choice_for,
    free_for_both,
    wants_offer,
)

DAY = 86400
NOW = 1_900_000_000


def _offer(**changes: object) -> Offer:
    base: dict[str, object] = dict(booking_id="b1", practitioner_id="p1", client_id="c1", status=OfferStatus.OPEN,
                                   reason=OfferReason.VERDICT, attribution="platform", offered_at=NOW,
                                   expires_at=NOW + 14 * DAY, original_starts_at=NOW - 3600)
    base.update(changes)
    return Offer(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("verdict", "attribution", "offered"), [
    ("interrupted", "platform", True),
    ("interrupted", "client_connection", True),
    ("interrupted", "practitioner_connection", True),
    ("interrupted", "unknown", True),
    ("interrupted", "client", False),  # a party's choice, not a breakdown
    ("completed", "platform", False),
    ("ended_early", "client", False),
    ("client_no_show", "", False),
    ("practitioner_no_show", "", False),
    ("both_no_show", "", False),
])
def test_only_a_technical_interruption_is_offered_a_free_reschedule(verdict: str, attribution: str,
                                                                   offered: bool) -> None:
    assert wants_offer({"verdict": verdict, "attribution": attribution}) is offered


def test_the_offer_lasts_the_window_and_reminds_before_its_end() -> None:
    terms = Terms.at(NOW, window_days=14, reminder_s=2 * DAY)
    assert (terms.expires_at - NOW, terms.expires_at - terms.remind_at) == (14 * DAY, 2 * DAY)
    short = Terms.at(NOW, window_days=1, reminder_s=2 * DAY)
    assert short.remind_at == NOW  # a reminder longer than the offer is sent at once


def test_a_new_time_leaves_the_lead_time_and_falls_before_the_offer_ends() -> None:
    offer = _offer()
    check_start(offer, NOW + 3600, now=NOW, lead_time_s=3600)
    check_start(offer, offer.expires_at - 1, now=NOW, lead_time_s=3600)
    with pytest.raises(TooSoon):
        check_start(offer, NOW + 3599, now=NOW, lead_time_s=3600)
    with pytest.raises(OutsideOffer):
        check_start(offer, offer.expires_at, now=NOW, lead_time_s=3600)


def test_a_used_or_ended_offer_allows_nothing() -> None:
    check_open(_offer(), NOW)
    with pytest.raises(OfferUsed) as used:
        check_open(_offer(status=OfferStatus.ACCEPTED, new_booking_id="b2"), NOW)
    assert used.value.extra == {"new_booking_id": "b2"}
    with pytest.raises(OfferExpired):
        check_open(_offer(status=OfferStatus.EXPIRED), NOW)
    with pytest.raises(OfferExpired):
        check_open(_offer(), NOW + 14 * DAY)  # past its end, before the job marked it


def test_proposals_are_distinct_ordered_and_each_one_possible() -> None:
    offer = _offer()
    assert check_proposals(offer, [NOW + 3 * DAY, NOW + DAY, NOW + 3 * DAY], now=NOW, lead_time_s=3600) == (
        NOW + DAY, NOW + 3 * DAY)
    with pytest.raises(OutsideOffer):
        check_proposals(offer, [NOW + DAY, NOW + 15 * DAY], now=NOW, lead_time_s=3600)
    proposed = _offer(proposals=(NOW + DAY,))
    assert choice_for(proposed, NOW + DAY) is Choice.PROPOSAL
    assert choice_for(proposed, NOW + 2 * DAY) is Choice.SLOT


def test_listed_times_leave_out_those_the_client_is_busy_at() -> None:
    slots = [(0, 50), (50, 100), (100, 150)]
    assert free_for_both(slots, [(60, 70)]) == [(0, 50), (100, 150)]
    assert free_for_both(slots, [(50, 50), (150, 200)]) == slots  # touching is not overlapping


def _event(type_: str, **body: object) -> Event:
    return Event(type_, {"booking_id": "b1", "practitioner_id": "p1", "client_id": "c1", **body})


@pytest.mark.parametrize(("type_", "kind", "told"), [
    ("booking.reschedule_offered", "reschedule.offered", {"c1", "p1"}),
    ("booking.reschedule_proposed", "reschedule.proposed", {"c1"}),
    ("booking.rescheduled", "reschedule.accepted", {"c1", "p1"}),
    ("booking.reschedule_offer_expiring", "reschedule.expiring", {"c1", "p1"}),
    ("booking.reschedule_offer_expired", "reschedule.expired", {"c1", "p1"}),
])
def test_each_step_of_a_reschedule_tells_the_parties_concerned(type_: str, kind: str, told: set[str]) -> None:
    notes = notifications_for(_event(type_, expires_at="2031-03-17T08:00:00Z", new_booking_id="b2"))
    assert {n.user_id for n in notes} == told and {n.kind for n in notes} == {kind}
    assert all(n.data["booking_id"] == "b1" for n in notes)


def test_the_new_booking_of_a_reschedule_is_told_once_by_its_reschedule_not_as_a_new_booking() -> None:
    assert notifications_for(_event("booking.created", starts_at="", ends_at="", rescheduled_from="b0")) == []
    assert len(notifications_for(_event("booking.created", starts_at="", ends_at=""))) == 1
