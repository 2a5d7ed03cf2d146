"""Every word the administration's page shows exists in Arabic, French and English, with the same
placeholders, so that all of it follows the language switch (a text missing in one language would show in
English, or as its key)."""

from __future__ import annotations

import re

import pytest

from .page_text_support import STATIC, assert_every_word_in_every_language, assert_same_placeholders, catalogue

ADMIN = STATIC / "admin"
REASONS = ("practitioner_late", "practitioner_absent", "session_cut_short", "conduct", "technical_problem",
           "billing", "other")
REFUND_REASONS = ("cancelled_in_time", "cancelled_late", "cancelled_by_practitioner", "cancelled_by_admin",
                  "client_no_show", "practitioner_no_show", "both_no_show", "complaint_upheld")


def used_keys() -> set[str]:
    js = (ADMIN / "admin.js").read_text(encoding="utf-8")
    html = (ADMIN / "admin.html").read_text(encoding="utf-8")
    keys = set(re.findall(r'\bt\("([a-z_]+)"', js))
    keys |= set(re.findall(r'"(err_[a-z_]+)"', js))
    keys |= set(re.findall(r'(?:problem|figure\(\$\("\w+"\)), "([a-z_]+)"', js))
    keys |= set(re.findall(r'data-i18n="([a-z_]+)"', html))
    keys = {k for k in keys if not k.endswith("_")}  # a prefix: the full keys are listed below
    # keys built from a prefix and a value the server sends
    for prefix, values in (("status_", ("open", "upheld", "rejected")), ("reason_", REASONS),
                           ("payout_", ("in_transit", "paid", "failed")),
                           ("refund_", ("owed", "sending", "sent", *REFUND_REASONS))):
        keys |= {prefix + v for v in values}
    return keys


def test_every_text_the_administration_page_uses_is_in_every_language() -> None:
    # the patterns find them
    assert {"paid_in", "escrow", "err_hold_pending", "reason_conduct", "refunded", "retry_refund"} <= used_keys()
    assert_every_word_in_every_language(catalogue("admin", "ADMIN_I18N"), used_keys())


@pytest.mark.parametrize("lang", ["ar", "fr", "en"])
def test_every_placeholder_of_a_text_is_the_same_in_every_language(lang: str) -> None:
    assert_same_placeholders(catalogue("admin", "ADMIN_I18N"), lang)
