"""Every word the administration's page shows exists in Arabic, French and English, with the same
placeholders, so that all of it follows the language switch (a text missing in one language would show in
English, or as its key)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .support import require

ADMIN = Path(__file__).resolve().parent.parent / "session_server" / "static" / "admin"
REASONS = ("practitioner_late", "practitioner_absent", "session_cut_short", "conduct", "technical_problem",
           "billing", "other")


def catalogue() -> dict[str, dict[str, str]]:
    require(shutil.which("node") is not None, "node is not installed")
    script = f"global.window = {{}}; require({json.dumps(str(ADMIN / 'i18n.js'))}); " \
             "process.stdout.write(JSON.stringify(window.ADMIN_I18N));"
    out = subprocess.run(["node", "-e", script], capture_output=True, check=True, text=True)
    loaded: dict[str, dict[str, str]] = json.loads(out.stdout)
    return loaded


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
                           ("payout_", ("in_transit", "paid", "failed"))):
        keys |= {prefix + v for v in values}
    return keys


def test_every_text_the_administration_page_uses_is_in_every_language() -> None:
    texts = catalogue()
    assert set(texts) == {"ar", "fr", "en"}
    assert {"paid_in", "escrow", "err_hold_pending", "reason_conduct"} <= used_keys()  # the patterns find them
    for lang, table in texts.items():
        missing = sorted(used_keys() - set(table))
        assert not missing, f"{lang} lacks {missing}"
        assert set(table) == set(texts["en"]), f"{lang} and en differ: {set(table) ^ set(texts['en'])}"
        assert all(isinstance(v, str) and v.strip() for v in table.values()), lang


@pytest.mark.parametrize("lang", ["ar", "fr", "en"])
def test_every_placeholder_of_a_text_is_the_same_in_every_language(lang: str) -> None:
    texts = catalogue()
    for key, english in texts["en"].items():
        assert set(re.findall(r"\{(\w+)\}", texts[lang][key])) == set(re.findall(r"\{(\w+)\}", english)), key
