"""The support board's pure decisions: a session's state, trouble first, how tickets move, the day's
figures counted as crisis lines count theirs, and the client's pseudonym."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_server.support import rules
from session_server.support.errors import EmptyNote, TicketMoveRefused, UnknownCause
from session_server.support.rules import (
    PartyFacts,
    SessionFacts,
    SessionState,
    TicketAction,
    TicketStatus,
    TicketTimes,
)

MIN = 60_000
START = 1_800_000_000_000
END = START + 50 * MIN
OPENS = START - 10 * MIN
CLOSES = END + 15 * MIN
HERE = PartyFacts(present=True, media="connected", quality="good")
GONE = PartyFacts()


def facts(client: PartyFacts = GONE, practitioner: PartyFacts = GONE, status: str = "confirmed",
          verdict: str | None = None) -> SessionFacts:
    return SessionFacts(START, END, OPENS, CLOSES, status, client, practitioner, verdict)


@pytest.mark.parametrize(("case", "f", "now", "state"), [
    ("an hour ahead", facts(), OPENS - 30 * MIN, SessionState.UPCOMING),
    ("room open, nobody", facts(), OPENS + MIN, SessionState.WAITING_FOR_BOTH),
    ("client waits", facts(client=HERE), START, SessionState.WAITING_FOR_PRACTITIONER),
    ("practitioner waits", facts(practitioner=HERE), START, SessionState.WAITING_FOR_CLIENT),
    ("both, media flowing", facts(HERE, HERE, "in_session"), START + MIN, SessionState.IN_SESSION),
    ("both, no media state yet", facts(PartyFacts(present=True), PartyFacts(present=True)), START,
     SessionState.IN_SESSION),
    ("client media failed", facts(PartyFacts(present=True, media="failed"), HERE), START, SessionState.MEDIA_DOWN),
    ("practitioner media stopped", facts(HERE, PartyFacts(present=True, media="media_stopped")), START,
     SessionState.MEDIA_DOWN),
    ("media reconnecting", facts(HERE, PartyFacts(present=True, media="reconnecting")), START,
     SessionState.RECONNECTING),
    ("socket reconnecting, other present", facts(PartyFacts(reconnecting=True), HERE), START,
     SessionState.RECONNECTING),
    ("interrupted verdict", facts(HERE, HERE, verdict="interrupted"), START + 20 * MIN, SessionState.INTERRUPTED),
    ("interrupted status", facts(status="interrupted"), END, SessionState.INTERRUPTED),
    ("completed", facts(status="completed"), END, SessionState.ENDED),
    ("cancelled while open", facts(client=HERE, status="cancelled"), START, SessionState.ENDED),
    ("rescheduled", facts(status="rescheduled"), START, SessionState.ENDED),
    ("other verdict", facts(verdict="client_no_show"), START + 20 * MIN, SessionState.ENDED),
    ("room closed", facts(HERE, HERE, "in_session"), CLOSES, SessionState.ENDED),
])
def test_a_session_state_says_what_an_agent_needs_first(case: str, f: SessionFacts, now: int,
                                                        state: SessionState) -> None:
    assert rules.session_state(f, now) is state, case


def test_trouble_comes_first_then_poor_quality_then_the_start() -> None:
    keys = {
        "open ticket, in session": rules.trouble_key(SessionState.IN_SESSION, "good", 1, START + MIN),
        "media down": rules.trouble_key(SessionState.MEDIA_DOWN, "good", 0, START),
        "reconnecting": rules.trouble_key(SessionState.RECONNECTING, None, 0, START),
        "in session, poor": rules.trouble_key(SessionState.IN_SESSION, "poor", 0, START + 5 * MIN),
        "in session, good, early": rules.trouble_key(SessionState.IN_SESSION, "good", 0, START),
        "in session, good, late": rules.trouble_key(SessionState.IN_SESSION, "excellent", 0, START + MIN),
        "upcoming": rules.trouble_key(SessionState.UPCOMING, None, 0, START - MIN),
        "ended": rules.trouble_key(SessionState.ENDED, None, 0, START - 99 * MIN),
    }
    assert sorted(keys, key=keys.__getitem__) == list(keys)


@pytest.mark.parametrize(("now", "elapsed", "remaining"), [
    (START - MIN, 0, 50), (START, 0, 50), (START + 20 * MIN + 59_000, 20, 29), (END, 50, 0), (END + MIN, 50, 0),
])
def test_minutes_gone_and_left_never_go_negative(now: int, elapsed: int, remaining: int) -> None:
    assert rules.minutes(START, END, now) == (elapsed, remaining)


@pytest.mark.parametrize(("start", "action", "to"), [
    (TicketStatus.OPEN, TicketAction.ACKNOWLEDGE, TicketStatus.ACKNOWLEDGED),
    (TicketStatus.OPEN, TicketAction.RESOLVE, TicketStatus.RESOLVED),
    (TicketStatus.OPEN, TicketAction.UNRESOLVABLE, TicketStatus.UNRESOLVABLE),
    (TicketStatus.OPEN, TicketAction.ABANDON, TicketStatus.ABANDONED),
    (TicketStatus.ACKNOWLEDGED, TicketAction.RESOLVE, TicketStatus.RESOLVED),
    (TicketStatus.ACKNOWLEDGED, TicketAction.UNRESOLVABLE, TicketStatus.UNRESOLVABLE),
    (TicketStatus.RESOLVED, TicketAction.NOTE, TicketStatus.RESOLVED),
    (TicketStatus.ACKNOWLEDGED, TicketAction.NOTE, TicketStatus.ACKNOWLEDGED),
])
def test_the_moves_a_ticket_can_make(start: TicketStatus, action: TicketAction, to: TicketStatus) -> None:
    assert rules.next_status(start, action) is to


@pytest.mark.parametrize(("start", "action"), [
    (TicketStatus.ACKNOWLEDGED, TicketAction.ACKNOWLEDGE),
    (TicketStatus.ACKNOWLEDGED, TicketAction.ABANDON),  # someone answered: not abandoned
    (TicketStatus.RESOLVED, TicketAction.UNRESOLVABLE),
    (TicketStatus.UNRESOLVABLE, TicketAction.RESOLVE),
    (TicketStatus.ABANDONED, TicketAction.ACKNOWLEDGE),
    (TicketStatus.RESOLVED, TicketAction.ACKNOWLEDGE),
])
def test_moves_a_ticket_cannot_make_are_refused(start: TicketStatus, action: TicketAction) -> None:
    with pytest.raises(TicketMoveRefused):
        rules.next_status(start, action)


def test_a_note_needs_a_known_cause_or_a_text() -> None:
    rules.check_note("client_network", "")
    rules.check_note(None, "called the client")
    with pytest.raises(UnknownCause):
        rules.check_note("bad luck", "")
    with pytest.raises(EmptyNote):
        rules.check_note(None, "   ")


def test_the_day_figures_count_as_crisis_lines_do() -> None:
    s = 1000
    now = START + 3600 * s
    tickets = [
        TicketTimes(TicketStatus.RESOLVED, START, START + 30 * s, START + 60 * s),  # answered in 30 s
        TicketTimes(TicketStatus.ACKNOWLEDGED, START, START + 100 * s, None),  # in 100 s
        TicketTimes(TicketStatus.RESOLVED, START, START + 400 * s, START + 500 * s),  # late: 400 s
        TicketTimes(TicketStatus.ABANDONED, START, None, START + 50 * s),  # left unanswered
        TicketTimes(TicketStatus.OPEN, now - 600 * s, None, None),  # open past the stated time: missed
        TicketTimes(TicketStatus.OPEN, now - 60 * s, None, None),  # open within it: not judged yet
    ]
    f = rules.day_figures(tickets, now, answer_within_s=300)
    assert (f.tickets, f.answered, f.abandoned, f.open_now, f.overdue_now) == (6, 3, 1, 2, 1)
    assert f.answered_in_time_share == round(2 / 5, 4)
    assert (f.wait_p50_s, f.wait_p90_s) == (100.0, 400.0)
    empty = rules.day_figures([], now, answer_within_s=300)
    assert empty.answered_in_time_share is None and empty.wait_p50_s is None


def test_a_pseudonym_is_stable_per_booking_and_unlinkable_across_bookings() -> None:
    key = b"k" * 32
    a1 = rules.pseudonym(key, "b1", "client-amina")
    assert a1 == rules.pseudonym(key, "b1", "client-amina")
    assert a1 != rules.pseudonym(key, "b2", "client-amina")
    assert a1 != rules.pseudonym(b"other" * 8, "b1", "client-amina")
    assert "amina" not in a1.lower() and a1.startswith("C-") and len(a1) == 11


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_a_pseudonym_never_shows_the_client(booking: str, client: str) -> None:
    name = rules.pseudonym(b"s" * 32, booking, client)
    assert len(name) == 11 and set(name[2:]) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ-")


@pytest.mark.parametrize(("causes", "attribution"), [
    ([], "unknown"),
    ([None], "unknown"),
    (["client_network"], "client_connection"),
    (["practitioner_device", None], "practitioner_connection"),
    (["client_network", "platform"], "platform"),  # the latest cause wins
    (["platform", "browser_permissions"], "unknown"),
])
def test_an_unresolvable_problem_is_attributed_from_the_agents_latest_cause(
        causes: list[str | None], attribution: str) -> None:
    assert rules.attribution_of(causes) == attribution
