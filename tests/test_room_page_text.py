"""Every word the room page shows exists in Arabic, French and English, so that all of it follows the
language switch (a text missing in one language would show in English, or as its key)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .support import require

ROOM = Path(__file__).resolve().parent.parent / "session_server" / "static" / "room"


def catalogue() -> dict[str, dict[str, str]]:
    require(shutil.which("node") is not None, "node is not installed")
    script = f"global.window = {{}}; require({json.dumps(str(ROOM / 'i18n.js'))}); " \
             "process.stdout.write(JSON.stringify(window.ROOM_I18N));"
    out = subprocess.run(["node", "-e", script], capture_output=True, check=True, text=True)
    loaded: dict[str, dict[str, str]] = json.loads(out.stdout)
    return loaded


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
    texts = catalogue()
    assert set(texts) == {"ar", "fr", "en"}
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
