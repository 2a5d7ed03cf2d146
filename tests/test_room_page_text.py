"""Every word the room page shows exists in Arabic, French and English, so that all of it follows the
language switch (a text missing in one language would show in English, or as its key)."""

from __future__ import annotations

import re

import pytest

from .page_text_support import STATIC, assert_every_word_in_every_language, assert_same_placeholders, catalogue

ROOM = STATIC / "room"


def used_keys() -> set[str]:
    js = (ROOM / "room.js").read_text(encoding="utf-8")
    html = (ROOM / "room.html").read_text(encoding="utf-8")
    keys = set(re.findall(r'\bt\("([a-z_]+)"', js))
    keys |= set(re.findall(r'notice\("([a-z_]+)"', js))
    keys |= set(re.findall(r'"(err_[a-z_]+)"', js))
    keys |= set(re.findall(r'data-i18n(?:-placeholder)?="([a-z_]+)"', html))
    keys = {k for k in keys if not k.endswith("_")}  # a prefix: the full keys are listed below
    # keys built from a prefix and a value the server sends
    for prefix, values in (("state_", ("connecting", "connected", "reconnecting", "closed")),
                           ("role_", ("client", "practitioner", "support", "admin")),
                           ("p_", ("connected", "reconnecting")),
                           ("quality_", ("excellent", "good", "poor", "lost"))):
        keys |= {prefix + v for v in values}
    return keys


def test_every_text_the_room_page_uses_is_in_every_language() -> None:
    assert_every_word_in_every_language(catalogue("room", "ROOM_I18N"), used_keys())


@pytest.mark.parametrize("lang", ["ar", "fr", "en"])
def test_every_placeholder_of_a_text_is_the_same_in_every_language(lang: str) -> None:
    assert_same_placeholders(catalogue("room", "ROOM_I18N"), lang)
