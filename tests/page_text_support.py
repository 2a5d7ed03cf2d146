"""What the pages' word tests share: a page's words as its i18n.js holds them (read by node), and the checks
that every word it uses exists in Arabic, French and English with the same placeholders."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from .support import require

STATIC = Path(__file__).resolve().parent.parent / "session_server" / "static"


def catalogue(page: str, variable: str) -> dict[str, dict[str, str]]:
    """The words of `static/<page>/i18n.js`, which sets `window.<variable>`, per language."""
    require(shutil.which("node") is not None, "node is not installed")
    script = f"global.window = {{}}; require({json.dumps(str(STATIC / page / 'i18n.js'))}); " \
             f"process.stdout.write(JSON.stringify(window.{variable}));"
    out = subprocess.run(["node", "-e", script], capture_output=True, check=True, text=True)
    loaded: dict[str, dict[str, str]] = json.loads(out.stdout)
    return loaded


def assert_every_word_in_every_language(texts: dict[str, dict[str, str]], used: set[str]) -> None:
    assert set(texts) == {"ar", "fr", "en"}
    for lang, table in texts.items():
        missing = sorted(used - set(table))
        assert not missing, f"{lang} lacks {missing}"
        assert set(table) == set(texts["en"]), f"{lang} and en differ: {set(table) ^ set(texts['en'])}"
        assert all(isinstance(v, str) and v.strip() for v in table.values()), lang


def assert_same_placeholders(texts: dict[str, dict[str, str]], lang: str) -> None:
    for key, english in texts["en"].items():
        assert set(re.findall(r"\{(\w+)\}", texts[lang][key])) == set(re.findall(r"\{(\w+)\}", english)), key
