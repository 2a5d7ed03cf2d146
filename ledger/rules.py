"""The ledger's rules: which money moves where for each thing that happened. Pure: no I/O, no clock.

Every decision returns `Entry` lists whose amounts sum to zero (a balanced posting). An entry adds its
signed amount to one account's balance; the accounts (docs/ledger.md):

  world:payments                    money clients paid in through the gateway (goes negative: the outside)
  booking:{id}:escrow               what a client paid for a booking not yet settled
  practitioner:{id}:available       earned and free to be paid out on Sunday
  practitioner:{id}:held            earned but held while a complaint about it is open
  practitioner:{id}:in_transit      in a payout sent to the bank, not yet confirmed
  practitioner:{id}:paid            confirmed paid out by the bank
  platform:revenue                  the platform's commission earned
  platform:discounts                promotions and referral discounts the platform funded (negative: a cost)
  referral:{id}:credits             referral credits owed to a referrer
  client:{id}:refund_payable        refunds owed to a client, until the payment gateway says it made them
  client:{id}:refunded              refunds the payment gateway made (the money is back with the client)

Only `world:` and `platform:discounts` may go below zero; a posting that would take any other account
below zero is refused as a whole. The outcome table (`OUTCOMES`) says, for each way a booking ends, what
part goes back to the client and what part the practitioner earns; the platform keeps the rest.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from .pricing import CodeKind

WORLD_PAYMENTS = "world:payments"
PLATFORM_REVENUE = "platform:revenue"
PLATFORM_DISCOUNTS = "platform:discounts"
MAY_GO_NEGATIVE_PREFIXES = ("world:",)
MAY_GO_NEGATIVE = frozenset({PLATFORM_DISCOUNTS})


def escrow(booking_id: str) -> str:
    return f"booking:{booking_id}:escrow"


def available(pid: str) -> str:
    return f"practitioner:{pid}:available"


def held(pid: str) -> str:
    return f"practitioner:{pid}:held"


def in_transit(pid: str) -> str:
    return f"practitioner:{pid}:in_transit"


def paid(pid: str) -> str:
    return f"practitioner:{pid}:paid"


def referral_credits(rid: str) -> str:
    return f"referral:{rid}:credits"


def refund_payable(cid: str) -> str:
    return f"client:{cid}:refund_payable"


def refunded(cid: str) -> str:
    return f"client:{cid}:refunded"


# Accounts whose entries are kept one by one, with the balance after each (a statement shows them): the
# people's accounts. The others (the outside world, the platform's, a booking's escrow) keep a balance; their
# history is the postings themselves (TigerBeetle's `history` flag, set only on the accounts that need it).
HISTORY_PREFIXES = ("practitioner:", "client:", "referral:")


def has_history(account: str) -> bool:
    return account.startswith(HISTORY_PREFIXES)


def may_go_negative(account: str) -> bool:
    return account in MAY_GO_NEGATIVE or account.startswith(MAY_GO_NEGATIVE_PREFIXES)


@functools.lru_cache(maxsize=4096)
def account_class(account: str) -> str:
    """The account without its owner: `practitioner:p1:available` -> `practitioner:available`."""
    parts = account.split(":")
    return f"{parts[0]}:{parts[-1]}" if len(parts) == 3 else account


class RuleError(ValueError):
    """Input the rules refuse: a posting is never made from it (the event goes to the dead letter)."""


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """(A msgspec struct, not a dataclass: the consumer makes several per event, and these cost the least.)"""

    account: str
    amount: int  # signed minor units: + increases the account's balance


def transfer(source: str, target: str, amount: int) -> list[Entry]:
    if amount < 0:
        raise RuleError("a transfer moves a positive amount")
    return [] if amount == 0 else [Entry(source, -amount), Entry(target, amount)]


def check_balanced(entries: Iterable[Entry]) -> None:
    if sum([e.amount for e in entries]) != 0:
        raise RuleError("a posting's entries must sum to zero")


# --- bookings ------------------------------------------------------------------------------------


class Funder(enum.StrEnum):
    """Who gave up money for a booking's discount."""

    NONE = "none"
    PRACTITIONER = "practitioner"
    PLATFORM = "platform"


class BookingMoney(msgspec.Struct, frozen=True):
    """What the ledger keeps of a booking: its parties and its split, as `booking.created` said."""

    booking_id: str
    practitioner_id: str
    client_id: str
    currency: str
    client_total: int
    practitioner_share: int
    platform_share: int
    discount: int = 0
    funder: Funder = Funder.NONE
    referrer_id: str = ""
    referrer_credit: int = 0
    starts_at: int = 0  # epoch seconds
    ends_at: int = 0

    def __post_init__(self) -> None:
        if min(self.client_total, self.practitioner_share, self.platform_share, self.discount,
               self.referrer_credit) < 0:
            raise RuleError("amounts must not be negative")
        if self.practitioner_share + self.platform_share != self.client_total:
            raise RuleError("the shares do not add up to the client's total")
        if self.referrer_credit > self.platform_share:
            raise RuleError("a referral credit cannot exceed the platform's share")
        if self.referrer_credit and not self.referrer_id:
            raise RuleError("a referral credit names its referrer")


def funder_of(code_kind: str | None, discount: int) -> Funder:
    if not discount or not code_kind:
        return Funder.NONE
    return Funder.PRACTITIONER if code_kind == CodeKind.PRACTITIONER.value else Funder.PLATFORM


def payment(money: BookingMoney) -> list[Entry]:
    """The platform takes the client's money before it books: it waits in the booking's escrow."""
    return transfer(WORLD_PAYMENTS, escrow(money.booking_id), money.client_total)


def carry(money: BookingMoney, to_booking_id: str) -> list[Entry]:
    """An interrupted session's money moves, whole, to its free reschedule (earned when that completes)."""
    return transfer(escrow(money.booking_id), escrow(to_booking_id), money.client_total)


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    ENDED_EARLY = "ended_early"
    CLIENT_NO_SHOW = "client_no_show"
    PRACTITIONER_NO_SHOW = "practitioner_no_show"
    BOTH_NO_SHOW = "both_no_show"
    CANCELLED_IN_TIME = "cancelled_in_time"
    CANCELLED_LATE = "cancelled_late"  # by the client, within the notice period
    CANCELLED_BY_PRACTITIONER = "cancelled_by_practitioner"
    CANCELLED_BY_ADMIN = "cancelled_by_admin"


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings' money policy: notice for a full refund and what a late cancellation costs."""

    cancel_notice_s: int = 24 * 3600
    late_cancel_refund_percent: int = 50
    late_cancel_practitioner_percent: int = 50
    client_no_show_refund_percent: int = 0

    def __post_init__(self) -> None:
        for p in (self.late_cancel_refund_percent, self.late_cancel_practitioner_percent,
                  self.client_no_show_refund_percent):
            if not 0 <= p <= 100:
                raise ValueError("a percentage is between 0 and 100")


@dataclass(frozen=True, slots=True)
class Split:
    refund_percent: int  # of the client's total, back to the client
    practitioner_percent: int  # of the practitioner's share, earned
    session_held: bool  # a session took place: referral credit due, platform-funded discount booked


@functools.lru_cache(maxsize=16)
def outcome_table(policy: Policy) -> Mapping[Outcome, Split]:
    return {
        Outcome.COMPLETED: Split(0, 100, True),
        Outcome.ENDED_EARLY: Split(0, 100, True),
        Outcome.CLIENT_NO_SHOW: Split(policy.client_no_show_refund_percent,
                                      100 - policy.client_no_show_refund_percent, False),
        Outcome.PRACTITIONER_NO_SHOW: Split(100, 0, False),
        Outcome.BOTH_NO_SHOW: Split(100, 0, False),
        Outcome.CANCELLED_IN_TIME: Split(100, 0, False),
        Outcome.CANCELLED_LATE: Split(policy.late_cancel_refund_percent, policy.late_cancel_practitioner_percent,
                                      False),
        Outcome.CANCELLED_BY_PRACTITIONER: Split(100, 0, False),
        Outcome.CANCELLED_BY_ADMIN: Split(100, 0, False),
    }


def cancellation_outcome(by: str, starts_at: int, now: int, policy: Policy) -> Outcome:
    """A cancellation's outcome: the client's in time (or not) before the start, or the other side's."""
    if by == "practitioner":
        return Outcome.CANCELLED_BY_PRACTITIONER
    if by == "admin":
        return Outcome.CANCELLED_BY_ADMIN
    return Outcome.CANCELLED_IN_TIME if starts_at - now >= policy.cancel_notice_s else Outcome.CANCELLED_LATE


class Settlement(msgspec.Struct, frozen=True):
    entries: list[Entry]
    refund: int
    earned: int  # credited to the practitioner's available balance
    platform: int  # net to the platform (after referral credit)


def settle(money: BookingMoney, outcome: Outcome, policy: Policy) -> Settlement:
    """Empty the booking's escrow according to the outcome table."""
    split = outcome_table(policy)[outcome]
    total = money.client_total
    refund = total * split.refund_percent // 100
    earned = min(money.practitioner_share * split.practitioner_percent // 100, total - refund)
    rest = total - refund - earned
    credit = min(money.referrer_credit, rest) if split.session_held else 0
    source = escrow(money.booking_id)
    entries = [*transfer(source, refund_payable(money.client_id), refund),
               *transfer(source, available(money.practitioner_id), earned),
               *(transfer(source, referral_credits(money.referrer_id), credit) if credit else []),
               *transfer(source, PLATFORM_REVENUE, rest - credit)]
    if split.session_held and money.funder is Funder.PLATFORM:
        # the platform's commission is earned whole; the discount it gave is its cost
        entries += transfer(PLATFORM_DISCOUNTS, PLATFORM_REVENUE, money.discount)
    check_balanced(entries)
    return Settlement(entries, refund, earned, rest - credit)


# --- complaints ----------------------------------------------------------------------------------


def hold(pid: str, earned: int, available_balance: int) -> list[Entry]:
    """A complaint holds the session's earned share at once (what is still available of it)."""
    return transfer(available(pid), held(pid), max(0, min(earned, available_balance)))


class Decision(enum.StrEnum):
    UPHELD = "upheld"
    REJECTED = "rejected"


def resolve(pid: str, client_id: str, held_amount: int, decision: Decision, refund: int | None) -> list[Entry]:
    """Upheld: the client is refunded from the held amount (all of it unless `refund` says less), the rest
    released; rejected: all of it released to the practitioner."""
    if decision is Decision.REJECTED:
        return transfer(held(pid), available(pid), held_amount)
    amount = held_amount if refund is None else refund
    if not 0 <= amount <= held_amount:
        raise RuleError("a refund comes from the held amount and cannot exceed it")
    return [*transfer(held(pid), refund_payable(client_id), amount),
            *transfer(held(pid), available(pid), held_amount - amount)]


# --- payouts -------------------------------------------------------------------------------------


def payouts(balances: Mapping[str, int], minimum: int) -> dict[str, int]:
    """Practitioner id -> the amount paid out: all of an available balance at or above the minimum."""
    return {pid: amount for pid, amount in sorted(balances.items()) if amount >= max(minimum, 1)}


def payout_sent(pid: str, amount: int) -> list[Entry]:
    return transfer(available(pid), in_transit(pid), amount)


def payout_answered(pid: str, amount: int, ok: bool) -> list[Entry]:
    """The bank's answer: paid, or failed and the money returns to the available balance."""
    return transfer(in_transit(pid), paid(pid) if ok else available(pid), amount)


# --- refunds -------------------------------------------------------------------------------------


def refund_made(client_id: str, amount: int) -> list[Entry]:
    """The payment gateway made a refund: what was owed to the client is now theirs again. (A refund the
    gateway could not make moves nothing: it stays owed until it is sent again.)"""
    return transfer(refund_payable(client_id), refunded(client_id), amount)
