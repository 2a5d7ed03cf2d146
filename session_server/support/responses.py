"""The shapes support's HTTP routes answer with, for the OpenAPI document (session_server.openapi)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PartyOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    present: bool
    reconnecting: bool
    media: str | None
    quality: str | None
    left_at: int | None
    left_reason: str | None


class TicketOut(BaseModel):
    """A problem ticket: who reported (a role, never a name), what kind, where it stands, its times (ms)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    booking_id: str
    reporter_role: str
    kind: str
    status: str
    opened_at: int
    acknowledged_at: int | None
    acknowledged_by: str | None
    closed_at: int | None


class NoteOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str
    cause: str | None
    text: str
    at: int


class TicketDetailOut(BaseModel):
    """A ticket with its staff-only notes (reading it is audited)."""

    model_config = ConfigDict(extra="forbid")

    ticket: TicketOut
    notes: list[NoteOut]


class TicketsOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tickets: list[TicketOut]
    answer_within_s: int


class SessionOut(BaseModel):
    """A session as the board shows it: ids, the client's pseudonym, times (ms), states, network figures."""

    model_config = ConfigDict(extra="forbid")

    booking_id: str
    practitioner_id: str
    client: str
    state: str
    status: str
    verdict: str | None
    attribution: str | None
    starts_at: int
    ends_at: int
    opens_at: int
    closes_at: int
    started_at: int | None
    ended_at: int | None
    parties: dict[str, PartyOut]
    support_present: int
    open_tickets: int
    rank: list[int]
    series: dict[str, list[list[float]]]


class SessionDetailOut(BaseModel):
    """One session of the board with its tickets (opening it is audited)."""

    model_config = ConfigDict(extra="forbid")

    session: SessionOut
    tickets: list[TicketOut]


class FiguresOut(BaseModel):
    """Today's response figures (UTC day)."""

    model_config = ConfigDict(extra="forbid")

    tickets: int
    answered: int
    answered_in_time_share: float | None
    wait_p50_s: float | None
    wait_p90_s: float | None
    abandoned: int
    open_now: int
    overdue_now: int


class AuditRecordOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    who: str
    role: str
    action: str
    booking_id: str
    ticket_id: str | None
    at: int


class AuditOut(BaseModel):
    """Who looked at what, newest first."""

    model_config = ConfigDict(extra="forbid")

    records: list[AuditRecordOut]
