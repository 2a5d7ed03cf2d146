"""The ledger follows the event stream: each booking's money is taken, split, refunded, carried and held
as the rules say, exactly once however often an event arrives, and a poison event goes to the dead letter
without holding back the events after it."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from ledger.consumer import replay
from ledger.processor import Processor
from ledger.store import LedgerStore
from session_server.events import EVENTS_STREAM, Event

from .ledger_support import (
    POLICY,
    T0,
    at,
    balances,
    created,
    drain,
    make_consumer,
    publish,
    publish_raw,
    transition,
    verdict,
)


async def test_a_completed_booking_pays_the_practitioner_share_and_the_platform_commission(
        redis_client: aioredis.Redis) -> None:
    c = make_consumer(redis_client)
    await publish(redis_client, created("b1"), transition("b1", "completed", now=T0 + 4 * 86400))
    await drain(c)
    assert await balances(redis_client) == {
        "world:payments": -350_000, "practitioner:p1:available": 300_000, "platform:revenue": 50_000}


async def test_a_second_delivery_of_the_same_event_changes_nothing(redis_client: aioredis.Redis) -> None:
    c = make_consumer(redis_client)
    paid = created("b1")
    await publish(redis_client, paid, transition("b1", "completed"))
    await drain(c)
    before = await balances(redis_client)
    await publish(redis_client, paid)  # the same event id again
    await drain(c)
    assert await balances(redis_client) == before
    assert await redis_client.llen("ledger:postings") == 2


async def test_codes_say_who_funds_the_discount_and_referrals_credit_the_referrer(
        redis_client: aioredis.Redis) -> None:
    c = make_consumer(redis_client)
    await publish(
        redis_client,
        Event("code.created", {"code": "SPRING", "kind": "practitioner", "owner_id": "p1"}),
        Event("code.created", {"code": "PROMO", "kind": "promotion", "owner_id": None}),
        created("b1", share=280_000, discount=20_000, code="SPRING"),
        created("b2", share=300_000, platform=40_000, discount=10_000, code="PROMO", cid="c2"),
        created("b3", share=300_000, platform=40_000, discount=10_000, code="FRIEND", code_kind="referral",
                referrer="c9", credit=5_000, cid="c3"),
        *(transition(b, "completed") for b in ("b1", "b2", "b3")))
    await drain(c)
    assert await balances(redis_client) == {
        "world:payments": -(330_000 + 340_000 + 340_000),
        "practitioner:p1:available": 880_000,
        # the practitioner's code cost the platform nothing; the promotion and the referral cost it 20,000,
        # and the referral's credit of 5,000 came out of what the platform kept
        "platform:revenue": 50_000 + 50_000 + 45_000,
        "platform:discounts": -20_000,
        "referral:c9:credits": 5_000,
    }


async def test_cancellations_refund_in_full_with_notice_or_by_the_practitioner_and_half_when_late(
        redis_client: aioredis.Redis) -> None:
    c = make_consumer(redis_client)
    starts = T0 + 3 * 86400
    await publish(
        redis_client, created("b1", starts=starts), created("b2", cid="c2", starts=starts),
        created("b3", cid="c3", starts=starts),
        transition("b1", "cancelled", by="client", reason="travel", starts_at="2026-11-26T08:00:00Z",
                   now=starts - 24 * 3600),
        transition("b2", "cancelled", cid="c2", by="client", reason="ill", starts_at="2026-11-26T08:00:00Z",
                   now=starts - 3600),
        transition("b3", "cancelled", cid="c3", by="practitioner", reason="ill", starts_at="2026-11-26T08:00:00Z",
                   now=starts - 60))
    await drain(c)
    assert await balances(redis_client) == {
        "world:payments": -1_050_000, "client:c1:refund_payable": 350_000, "client:c3:refund_payable": 350_000,
        "client:c2:refund_payable": 175_000, "practitioner:p1:available": 150_000, "platform:revenue": 25_000}


async def test_verdicts_settle_no_shows_and_an_interrupted_sessions_money_waits_for_its_reschedule(
        redis_client: aioredis.Redis) -> None:
    c = make_consumer(redis_client)
    await publish(redis_client, created("b1"), created("b2", cid="c2"), created("b3", cid="c3"),
                  created("b4", cid="c4"), created("b5", cid="c5"),
                  verdict("b1", "client_no_show"), verdict("b2", "practitioner_no_show"),
                  verdict("b3", "interrupted"), verdict("b5", "interrupted"))
    await drain(c)
    got = await balances(redis_client)
    assert got["client:c2:refund_payable"] == 350_000
    assert got["practitioner:p1:available"] == 300_000  # the client did not come: the practitioner is paid
    assert got["booking:b3:escrow"] == 350_000  # interrupted: nothing earned yet
    # both spellings of a free reschedule: the money moves whole to the new booking, earned when it completes
    await publish(redis_client,
                  Event("booking.rescheduled", {"booking_id": "b3", "new_booking_id": "r3", "client_total": 0,
                                                "practitioner_id": "p1", "client_id": "c3", "from": "interrupted",
                                                "to": "rescheduled"}),
                  Event("booking.rescheduled", {"rescheduled_from": "b5", "rescheduled_to": "r5",
                                                "client_total": 0, "practitioner_share": 300_000}),
                  created("r3", cid="c3", share=0, platform=0))
    await drain(c)
    got = await balances(redis_client)
    assert "booking:b3:escrow" not in got and got["booking:r3:escrow"] == 350_000
    assert got["booking:r5:escrow"] == 350_000
    await publish(redis_client, transition("r3", "completed", cid="c3"), verdict("r5", "completed"),
                  verdict("b4", "completed"), transition("b4", "completed", cid="c4"))
    await drain(c)
    got = await balances(redis_client)
    assert got["practitioner:p1:available"] == 4 * 300_000  # b4 settled once, by the first word on it
    assert got["platform:revenue"] == 4 * 50_000
    assert not [k for k in got if k.startswith("booking:")]


@pytest.mark.parametrize("batch", [200, 2])  # 2: a batch decided while the one before it is written
async def test_a_poison_event_goes_to_the_dead_letter_and_the_events_after_it_are_posted(
        redis_client: aioredis.Redis, batch: int) -> None:
    c = make_consumer(redis_client, batch=batch)
    bad_shares = created("b2")
    bad_shares.body["practitioner_share"] = 1  # does not add up to the client's total
    await publish(redis_client, created("b1"), bad_shares)
    await publish_raw(redis_client, {"id": "e-v9", "type": "booking.completed", "v": "9",
                                     "time": "2026-11-23T08:00:00Z", "body": "{}"})
    await publish_raw(redis_client, {"id": "e-bad", "type": "booking.created", "v": "1",
                                     "time": "2026-11-23T08:00:00Z", "body": "{not json"})
    await publish(redis_client, transition("b9", "completed"),  # a booking the ledger never saw paid
                  transition("b1", "completed"))
    await drain(c)
    assert await balances(redis_client) == {
        "world:payments": -350_000, "practitioner:p1:available": 300_000, "platform:revenue": 50_000}
    dead = await c.store.dead_letters()
    reasons = [d["reason"] for d in dead]
    assert len(dead) == 4, reasons
    assert "booking.created: the shares do not add up to the client's total" in reasons
    assert "booking.completed: unknown version 9" in reasons
    assert any(r.startswith("unreadable entry") for r in reasons)
    assert any(r.startswith("failed 3 times; last: booking b9 is not in the ledger yet") for r in reasons)
    assert (await redis_client.xpending(EVENTS_STREAM, "ledger"))["pending"] == 0


@pytest.mark.parametrize("batch", [200, 2])  # 2: a batch decided while the one before it is written
async def test_a_replay_of_the_stream_into_an_empty_ledger_gives_the_same_balances(
        redis_client: aioredis.Redis, batch: int) -> None:
    c = make_consumer(redis_client, batch=batch)
    await publish(redis_client, created("b1"), created("b2", cid="c2"), transition("b1", "completed"),
                  transition("b2", "cancelled", cid="c2", by="client", reason="x", starts_at="2026-11-24T08:00:00Z",
                             now=T0 + 3600))
    await drain(c)
    fresh = LedgerStore(redis_client, prefix="replay", events_stream="replay:events")
    await replay(fresh, Processor(fresh, POLICY, payout_minimum=100_000), redis_client, EVENTS_STREAM)
    assert await balances(redis_client, "replay") == await balances(redis_client)
    postings = await c.store.postings()
    assert all(sum(e[1] for e in p["entries"]) == 0 for p in postings)
    assert json.loads(await redis_client.get("ledger:posting:settle:b1"))["ref"]
    assert at(T0)  # the stream's times are the events', not the machine's


def test_both_parties_are_told_of_a_complaint_and_its_resolution_without_its_text() -> None:
    from session_server.notifications.rules import notifications_for

    filed = Event("complaint.filed", {"complaint_id": "k1", "booking_id": "b1", "client_id": "c1",
                                      "practitioner_id": "p1", "reason": "conduct", "has_text": True})
    resolved = Event("complaint.resolved", {"complaint_id": "k1", "booking_id": "b1", "client_id": "c1",
                                            "practitioner_id": "p1", "decision": "upheld", "held": 9,
                                            "refund_minor": 9})
    got = [(n.user_id, n.kind, n.data) for e in (filed, resolved) for n in notifications_for(e)]
    assert got == [
        ("c1", "complaint.filed", {"complaint_id": "k1", "booking_id": "b1"}),
        ("p1", "complaint.filed", {"complaint_id": "k1", "booking_id": "b1"}),
        ("c1", "complaint.resolved", {"complaint_id": "k1", "booking_id": "b1", "decision": "upheld",
                                      "refund_minor": 9}),
        ("p1", "complaint.resolved", {"complaint_id": "k1", "booking_id": "b1", "decision": "upheld",
                                      "refund_minor": 9})]


async def test_a_free_reschedule_as_the_reschedule_feature_writes_it_carries_the_money_once(
        redis_client: aioredis.Redis) -> None:
    c = make_consumer(redis_client)
    carried = {"currency": "DZD", "client_total": 350_000, "practitioner_share": 300_000, "platform_share": 50_000,
               "discount": 0, "code": None}
    new = created("n1", now=T0 + 7200)
    new.body.update({"client_total": 0, "rescheduled_from": "b1", "carried_over": carried})  # the original's shares
    await publish(redis_client, created("b1"), verdict("b1", "interrupted"), new,
                  Event("booking.rescheduled", {"booking_id": "b1", "new_booking_id": "n1", "practitioner_id": "p1",
                                                "client_id": "c1", "from": "interrupted", "to": "rescheduled",
                                                "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-01T09:50:00Z",
                                                "client_total": 0, "carried_over": carried}),
                  transition("n1", "completed"))
    await drain(c)
    assert await c.store.dead_letters() == []
    assert await balances(redis_client) == {
        "world:payments": -350_000, "practitioner:p1:available": 300_000, "platform:revenue": 50_000}
