"""axe-core in a real page: the accessibility rules a screen reader, keyboard or low-vision user depends on.

The checker is vendored under tests/vendor/axe-core (MPL-2.0, see its README), its integrity checked
before it is injected, so the tests need no network.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from .support import require

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
AXE_SRI = "sha256-KTSJmUUM3yhJqOcLeRL8LahahJ2jnA0NU5T1HUqe2Vw="  # axe-core 4.14.1, from its sri-history.json
BLOCKING = ("serious", "critical")


def axe_source() -> str:
    require(AXE.exists(), f"axe-core is missing ({AXE.name} under tests/vendor/axe-core)")
    body = AXE.read_bytes()
    digest = "sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert digest == AXE_SRI, f"tests/vendor/axe-core/axe.min.js is not axe-core 4.14.1 ({digest})"
    return body.decode()


async def serious_violations(page: Any) -> list[str]:
    """Every serious or critical axe-core violation on the page as it is now, one line each."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        # through the DevTools protocol: the pages' Content-Security-Policy (rightly) refuses inline scripts
        cdp = await page.context.new_cdp_session(page)
        try:
            await cdp.send("Runtime.evaluate", {"expression": axe_source()})
        finally:
            await cdp.detach()
    found: list[dict[str, Any]] = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
             .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                           nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5)}))""")
    return [f"{v['impact']} {v['id']}: {v['help']} at {v['nodes']}" for v in found if v["impact"] in BLOCKING]


async def assert_accessible(page: Any, where: str) -> None:
    problems = await serious_violations(page)
    assert not problems, f"axe-core on {where}:\n" + "\n".join(problems)
