"""The verdict of a session from its timeline: one table row per story a support agent would recognise,
and properties that hold for any timeline (hypothesis)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_server.outages.rules import (
    CLIENT,
    PRACTITIONER,
    Attribution,
    Entry,
    Kind,
    Schedule,
    Thresholds,
    Verdict,
    classify_leave,
    decide,
    media_down_since,
)

T0 = 1_800_000_000_000  # the scheduled start, in ms
SCHEDULE = Schedule(T0, T0 + 50 * 60_000)  # a 50-minute session
TH = Thresholds()  # no-show 15 min, interruption 5 min and < 80 %, give-up 10 min, grace 15 min
C, P = CLIENT, PRACTITIONER


def m(minute: float) -> int:
    return T0 + int(minute * 60_000)


def join(role: str, t: float) -> Entry:
    return Entry(m(t), Kind.JOIN, role)


def leave(role: str, t: float, reason: str = "leave") -> Entry:
    return Entry(m(t), Kind.LEAVE, role, reason)


def media(role: str, t: float, state: str) -> Entry:
    return Entry(m(t), Kind.MEDIA, role, state)


def meet(t: float) -> list[Entry]:
    """Both enter at `t` and their media connects."""
    return [join(C, t), join(P, t), media(C, t, "connected"), media(P, t, "connected")]


def down(role: str, t0: float, t1: float | None, state: str = "reconnecting") -> list[Entry]:
    out = [media(role, t0, state)]
    if t1 is not None:
        out.append(media(role, t1, "connected"))
    return out


def both_leave(t: float) -> list[Entry]:
    return [leave(C, t), leave(P, t)]


@dataclass
class Row:
    story: str
    entries: list[Entry]
    now: float
    verdict: Verdict | None
    attribution: Attribution | None = None
    net: int | None = None
    th: Thresholds = field(default_factory=Thresholds)
    ended_by: str | None = None


RELAY = Thresholds(judge_media=False)

ROWS = [
    Row("a full session", meet(0) + both_leave(50), 65, Verdict.COMPLETED, net=50),
    Row("both early: only the scheduled minutes count", meet(-5) + both_leave(50), 65, Verdict.COMPLETED, net=50),
    Row("a session that runs over counts 50 minutes", meet(0) + both_leave(58), 65, Verdict.COMPLETED, net=50),
    Row("a two-minute reconnect stays completed", meet(0) + down(C, 20, 22) + both_leave(50), 65,
        Verdict.COMPLETED, net=48),
    Row("several short reconnects, each inside the threshold, stay completed",
        meet(0) + down(C, 10, 14) + down(P, 20, 24) + down(C, 30, 34) + both_leave(50), 65, Verdict.COMPLETED,
        net=38),
    Row("a heartbeat lost and resumed within the threshold",
        [*meet(0), Entry(m(20), Kind.CONNECTION_LOST, C), Entry(m(20.5), Kind.CONNECTION_BACK, C),
         *both_leave(50)], 65, Verdict.COMPLETED, net=49),
    Row("a late practitioner (ten minutes) is not a no-show",
        [join(C, -1), media(C, -1, "connected"), join(P, 10), media(P, 10, "connected"), *both_leave(50)], 65,
        Verdict.COMPLETED, net=40),
    Row("a practitioner 16 minutes late is a no-show, decided at 15 minutes",
        [join(C, 0), media(C, 0, "connected")], 15, Verdict.PRACTITIONER_NO_SHOW),
    Row("a practitioner who came after the no-show time is still a no-show",
        [join(C, 0), media(C, 0, "connected"), join(P, 16), media(P, 16, "connected")], 66,
        Verdict.PRACTITIONER_NO_SHOW),
    Row("the client who never came: nothing decided at 14 minutes", [join(P, -2)], 14, None),
    Row("the client who never came: a no-show at 15 minutes", [join(P, -2)], 15, Verdict.CLIENT_NO_SHOW),
    Row("nobody came", [], 15, Verdict.BOTH_NO_SHOW),
    Row("the practitioner's network dropped for good: still trying before the give-up",
        [*meet(0), Entry(m(20), Kind.CONNECTION_LOST, P), *down(P, 20, None), leave(P, 20.5, "timeout")],
        29.9, None),
    Row("the practitioner's network dropped for good: interrupted at the give-up",
        [*meet(0), Entry(m(20), Kind.CONNECTION_LOST, P), *down(P, 20, None), leave(P, 20.5, "timeout")],
        30, Verdict.INTERRUPTED, Attribution.PRACTITIONER_CONNECTION, net=20),
    Row("the media node killed mid-session, nobody back: the platform's fault",
        [*meet(0), Entry(m(20), Kind.NODE_LOST, ref="n1"), leave(C, 20.2, "node_lost"),
         leave(P, 20.2, "node_lost")], 30, Verdict.INTERRUPTED, Attribution.PLATFORM, net=20),
    Row("the media node killed mid-session, both back through another node within a minute",
        [*meet(0), Entry(m(20), Kind.NODE_LOST, ref="n1"), media(C, 21, "connected"), media(P, 21, "connected"),
         *both_leave(50)], 65, Verdict.COMPLETED, net=49),
    Row("a problem reported, then recovery",
        [*meet(0), Entry(m(10), Kind.PROBLEM, C, "video"), *down(C, 10, 11, "media_stopped"), *both_leave(50)],
        65, Verdict.COMPLETED, net=49),
    Row("a problem reported with nothing wrong recorded",
        [*meet(0), Entry(m(10), Kind.PROBLEM, P, "audio"), *both_leave(50)], 65, Verdict.COMPLETED, net=50),
    Row("overlapping outages of both sides, about as long: unknown",
        meet(0) + down(C, 20, None) + down(P, 22, None), 30, Verdict.INTERRUPTED, Attribution.UNKNOWN, net=20),
    Row("overlapping outages where the client was down far longer: the client's connection",
        meet(0) + down(C, 20, None) + down(P, 28, None), 30, Verdict.INTERRUPTED,
        Attribution.CLIENT_CONNECTION, net=20),
    Row("a quality verdict of lost counts as media down", [*meet(0), Entry(m(20), Kind.QUALITY, C, "lost")], 30,
        Verdict.INTERRUPTED, Attribution.CLIENT_CONNECTION, net=20),
    Row("the client left on purpose at 20 minutes and did not come back",
        [*meet(0), leave(C, 20), leave(P, 30)], 65, Verdict.ENDED_EARLY, net=20, ended_by=C),
    Row("leaving on purpose five minutes before the end is a completed session", meet(0) + both_leave(45), 65,
        Verdict.COMPLETED, net=45),
    Row("the practitioner's 'technical problem, reschedule' after the client's media failed",
        meet(0) + down(C, 10, None, "failed") + [Entry(m(12), Kind.END_TECHNICAL, P)], 12,
        Verdict.INTERRUPTED, Attribution.CLIENT_CONNECTION, net=10),
    Row("'technical problem, reschedule' with nothing recorded: unknown",
        [*meet(0), Entry(m(12), Kind.END_TECHNICAL, P)], 12, Verdict.INTERRUPTED, Attribution.UNKNOWN, net=12),
    Row("media that never connected for anyone", [join(C, 0), join(P, 0)], 10, Verdict.INTERRUPTED,
        Attribution.UNKNOWN, net=0),
    Row("only the client's media never connected", [join(C, 0), join(P, 0), media(P, 0, "connected")], 10,
        Verdict.INTERRUPTED, Attribution.CLIENT_CONNECTION, net=0),
    Row("a long outage at the very end, after most of the session, is completed",
        meet(0) + down(C, 44, None) + both_leave(50), 65, Verdict.COMPLETED, net=44),
    Row("a six-minute outage early on, then recovered, is completed (88 %)",
        meet(0) + down(P, 10, 16) + both_leave(50), 65, Verdict.COMPLETED, net=44),
    Row("an outage past the give-up at 10 minutes is interrupted at 20", meet(0) + down(C, 10, None), 20,
        Verdict.INTERRUPTED, Attribution.CLIENT_CONNECTION, net=10),
    Row("leaving on purpose during the client's outage keeps it the client's",
        meet(0) + down(C, 20, None, "media_stopped") + [leave(P, 22)], 30, Verdict.INTERRUPTED,
        Attribution.CLIENT_CONNECTION, net=20),
    Row("relay mode: presence is what counts", [join(C, 0), join(P, 0), *both_leave(50)], 65,
        Verdict.COMPLETED, net=50, th=RELAY),
    Row("relay mode: a dropped client back within two minutes",
        [join(C, 0), join(P, 0), Entry(m(20), Kind.CONNECTION_LOST, C), leave(C, 20.5, "timeout"), join(C, 22),
         *both_leave(50)], 65, Verdict.COMPLETED, net=48, th=RELAY),
    Row("both came but never met, the client gave up on purpose", [join(C, 0), leave(C, 5), join(P, 10)], 65,
        Verdict.ENDED_EARLY, ended_by=C),
    Row("both came but never met, the client's connection dropped",
        [join(C, 0), leave(C, 5, "timeout"), join(P, 10)], 65, Verdict.INTERRUPTED,
        Attribution.CLIENT_CONNECTION),
    Row("nothing final in the middle of a good session", meet(0), 30, None, net=30),
    Row("the room's close makes the verdict final", meet(0) + both_leave(50)
        + [Entry(m(55), Kind.ROOM_END, state="room_closed")], 55, Verdict.COMPLETED, net=50),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.story for r in ROWS])
def test_verdict_table(row: Row) -> None:
    d = decide(SCHEDULE, row.entries, m(row.now), row.th)
    assert d.verdict is row.verdict
    if row.verdict is Verdict.INTERRUPTED:
        assert d.attribution is row.attribution
    else:
        assert d.attribution is None
    if row.net is not None:
        assert d.net_minutes == row.net
    assert d.ended_by == row.ended_by


def test_events_out_of_order_give_the_same_verdict() -> None:
    story = meet(0) + down(C, 20, 22) + [Entry(m(25), Kind.PROBLEM, P, "audio")] + both_leave(50)
    shuffled = list(story)
    random.Random(7).shuffle(shuffled)
    assert decide(SCHEDULE, shuffled, m(65), TH) == decide(SCHEDULE, story, m(65), TH)


def test_the_outage_going_on_is_reported_with_its_start_and_side() -> None:
    d = decide(SCHEDULE, meet(0) + down(C, 20, None, "media_stopped"), m(21), TH)
    assert d.verdict is None and d.outage is not None
    assert d.outage.since_ms == m(20) and d.outage.attribution is Attribution.CLIENT_CONNECTION
    assert decide(SCHEDULE, meet(0) + down(C, 20, 21), m(22), TH).outage is None


def test_present_minutes_and_first_joins_are_the_ledgers_facts() -> None:
    story = [join(C, -1), join(P, 10), media(C, -1, "connected"), media(P, 10, "connected"), *both_leave(50)]
    d = decide(SCHEDULE, story, m(65), TH)
    assert d.present_minutes(C) == 50 and d.present_minutes(P) == 40 and d.scheduled_minutes == 50
    assert d.first_join_ms == {C: m(-1), P: m(10)}


def test_leave_reasons_follow_the_taxonomy() -> None:
    assert classify_leave("leave", True, "connected", True) == "left_on_purpose"
    assert classify_leave("timeout", True, "connected", True) == "signal_lost"
    assert classify_leave("timeout", True, "failed", True) == "media_failed"
    assert classify_leave("timeout", False, "connecting", True) == "never_connected"
    assert classify_leave("node_lost", False, "none", True) == "node_lost"
    d = decide(SCHEDULE, [*meet(0), leave(C, 10, "timeout"), leave(P, 11)], m(12), TH)
    assert d.leave_reasons == {C: "signal_lost", P: "left_on_purpose"}


def test_media_reported_late_is_dated_when_it_stopped() -> None:
    assert media_down_since("media_stopped", "no RTP", 10_000, silence_s=5, consent_s=10) == 5_000
    assert media_down_since("reconnecting", "consent timeout", 20_000, silence_s=5, consent_s=10) == 10_000
    assert media_down_since("reconnecting", "new offer", 20_000, silence_s=5, consent_s=10) == 20_000


# --- properties ------------------------------------------------------------------------------------

_STATES = {Kind.LEAVE: ["leave", "timeout", "node_lost", "room_closed"],
           Kind.MEDIA: ["connecting", "connected", "reconnecting", "media_stopped", "failed", "closed"],
           Kind.QUALITY: ["good", "poor", "lost"], Kind.PROBLEM: ["audio", "video"],
           Kind.ROOM_END: ["room_closed", "leave"]}


@st.composite
def entries(draw: st.DrawFn) -> list[Entry]:
    # few distinct instants, so that many entries share a time
    instants = draw(st.lists(st.integers(-20, 80), min_size=1, max_size=6))
    out = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(list(Kind)))
        role = "" if kind in (Kind.NODE_LOST, Kind.ROOM_END) else draw(st.sampled_from([C, P]))
        state = draw(st.sampled_from(_STATES.get(kind, [""])))
        out.append(Entry(m(draw(st.sampled_from(instants))), kind, role, state))
    return out


@settings(max_examples=300, deadline=None)
@given(entries(), st.integers(-30, 90), st.booleans())
def test_net_minutes_are_never_negative_nor_more_than_scheduled(story: list[Entry], now: int, media_: bool) -> None:
    d = decide(SCHEDULE, story, m(now), Thresholds(judge_media=media_))
    assert 0 <= d.net_ms <= d.scheduled_ms
    assert all(0 <= v <= d.scheduled_ms for v in d.present_ms.values())
    assert d.net_ms <= min(d.present_ms.values())


@settings(max_examples=300, deadline=None)
@given(entries(), st.integers(-30, 90), st.randoms(use_true_random=False))
def test_the_verdict_does_not_depend_on_the_order_of_events_with_equal_times(
        story: list[Entry], now: int, rnd: random.Random) -> None:
    shuffled = list(story)
    rnd.shuffle(shuffled)
    assert decide(SCHEDULE, shuffled, m(now), TH) == decide(SCHEDULE, story, m(now), TH)


@settings(max_examples=200, deadline=None)
@given(entries(), st.integers(66, 200))
def test_after_the_room_closes_there_is_always_a_verdict(story: list[Entry], now: int) -> None:
    d = decide(SCHEDULE, story, m(now), TH)
    assert d.verdict is not None
    assert (d.attribution is not None) == (d.verdict is Verdict.INTERRUPTED)
