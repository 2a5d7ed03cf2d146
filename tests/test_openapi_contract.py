"""Schemathesis against the real server: every documented route, every role, generated inputs.

The server is the real app under uvicorn on 127.0.0.1 with a real Redis, seeded with a practitioner, a
booking and a document so that generated requests reach past "not found". For every operation and
every caller (a token of each role, the platform's API key) Schemathesis generates requests that fit
the document and requests that do not, and every answer must hold: no 500, a documented status, the
documented media type, a body that matches its schema, a refusal that is a problem document whose code
the error catalogue knows, and malformed input refused. Seeded and bounded: the same cases every run.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from session_server.app import create_app
from session_server.errors import lookup

from .conftest import API_KEY_ID, API_SECRET, make_settings
from .support import free_port

EXAMPLES_PER_OPERATION = 6  # per caller and per mode: about 37 operations x 5 callers x 2 modes x 6
CALLERS = ("client", "practitioner", "support", "admin", "api_key")
PRACTITIONER = "p-contract"
CLIENT = "c-contract"


@dataclass
class Seeded:
    url: str
    headers: dict[str, dict[str, str]]
    ids: dict[str, str]
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class ThreadedServer:
    """uvicorn in a thread of its own, with its own event loop: the test drives it with plain HTTP."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        ready = threading.Event()
        for _ in range(1000):
            if self.server.started or not self.thread.is_alive():
                break
            ready.wait(0.01)  # the server's own start, in another thread: nothing to await here
        assert self.server.started, "the server did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{API_KEY_ID}:{API_SECRET}".encode()).decode()}


def _seed(url: str) -> Seeded:
    headers = {"api_key": _basic()}
    subs = {"client": CLIENT, "practitioner": PRACTITIONER, "support": "s-contract", "admin": "a-contract"}
    with httpx.Client(base_url=url) as http:
        for role, sub in subs.items():
            r = http.post("/v1/tokens", headers=_basic(), json={"sub": sub, "role": role, "ttl_s": 3600})
            assert r.status_code == 201, r.text
            headers[role] = {"Authorization": f"Bearer {r.json()['token']}"}
        r = http.post("/v1/practitioners", headers=_basic(), json={
            "id": PRACTITIONER, "display_name": "Dr. Contract", "specialty": "psychologist", "price_minor": 300000})
        assert r.status_code == 201, r.text
        r = http.post(f"/v1/practitioners/{PRACTITIONER}/status", headers=_basic(), json={"status": "active"})
        assert r.status_code == 200, r.text
        days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        r = http.put(f"/v1/practitioners/{PRACTITIONER}/availability", headers=headers["practitioner"],
                     json={"weekly": [{"day": d, "start": "00:00", "end": "24:00"} for d in days]})
        assert r.status_code == 200, r.text
        start = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        end = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        r = http.get(f"/v1/practitioners/{PRACTITIONER}/slots", headers=headers["client"],
                     params={"from": start, "to": end})
        assert r.status_code == 200 and r.json()["slots"], r.text
        r = http.post("/v1/bookings", headers=headers["client"],
                      json={"practitioner_id": PRACTITIONER, "starts_at": r.json()["slots"][0]["starts_at"]})
        assert r.status_code == 201, r.text
        booking = r.json()["id"]
        r = http.post("/v1/documents", headers={**headers["practitioner"], "X-Filename": "notes.txt"},
                      content=b"breathing exercise, twice a day\n")
        assert r.status_code == 201, r.text
        document = r.json()["id"]
        r = http.post(f"/v1/documents/{document}/shares", headers=headers["practitioner"],
                      json={"booking_id": booking})
        assert r.status_code == 201, r.text
        share = r.json()["shares"][0]["share_id"]
    ids = {"pid": PRACTITIONER, "bid": booking, "booking_id": booking, "document_id": document, "share_id": share}
    return Seeded(url=url, headers=headers, ids=ids)


@pytest.fixture(scope="module")
def seeded(embedded_redis_url: str, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Seeded]:
    client = redis.Redis.from_url(embedded_redis_url)
    client.flushdb()
    client.close()
    app = create_app(make_settings(tmp_path_factory.mktemp("contract"), embedded_redis_url))
    with ThreadedServer(app) as url:
        state = _seed(url)
        yield state
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = (f"schemathesis: {state.cases} generated cases, by status "
            + ", ".join(f"{s}: {n}" for s, n in sorted(state.by_status.items())))
    if reporter is not None:
        reporter.write_line(line)
    (Path(str(request.config.rootpath)) / ".pytest_cache").mkdir(exist_ok=True)
    (Path(str(request.config.rootpath)) / ".pytest_cache" / "schemathesis-cases.txt").write_text(line + "\n")


def problem_code_is_in_the_catalogue(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every refusal is a problem document whose code the catalogue knows, with the catalogue's status."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0] == "application/problem+json", (
        f"{response.status_code} is not a problem document")
    body = response.json()
    code = body.get("code")
    entry = lookup(code)
    assert entry is not None, f"the code {code!r} is not in the error catalogue"
    assert entry.status == response.status_code, (
        f"{code!r} came with {response.status_code}; the catalogue says {entry.status}")
    return True


POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_schema_conformance, problem_code_is_in_the_catalogue]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]


def _operations(url: str) -> list[Any]:
    document = httpx.get(f"{url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    broken = [r.err() for r in results if isinstance(r, Err)]
    assert not broken, f"operations Schemathesis cannot read: {broken}"
    return [r.ok() for r in results if isinstance(r, Ok)]


def _summary(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None) or [exc]
    return "; ".join(str(e).split("\n\nSchema:")[0][:600] for e in inner)


def _with_seeded_ids(case: Any, ids: dict[str, str]) -> None:
    # Half the generated path values (chosen by a checksum, so the same ones every run) become the
    # seeded records' ids, so the handlers past "not found" are reached too.
    for name, value in list((case.path_parameters or {}).items()):
        if name in ids and zlib.crc32(repr(value).encode()) % 2 == 0:
            case.path_parameters[name] = ids[name]


def _exercise(operation: Any, seeded: Seeded, caller: str, mode: GenerationMode, checks: list[Any],
              failures: list[str]) -> None:
    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _with_seeded_ids(case, seeded.ids)
        headers = dict(case.headers or {})
        headers.pop("Authorization", None)
        case.headers = {**headers, **seeded.headers[caller]}
        response = case.call(base_url=seeded.url, timeout=10)
        seeded.cases += 1
        seeded.by_status[response.status_code] = seeded.by_status.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=checks)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label} as {caller} ({mode.value}): {_summary(exc)}")
            raise

    recorded = len(failures)
    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # an operation with nothing to get wrong (no parameters, no body) has no negative case
    except (Exception, BaseExceptionGroup):
        if len(failures) == recorded:  # not a contract failure: the test itself is broken
            raise


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("caller", CALLERS)
def test_every_route_keeps_its_contract(seeded: Seeded, caller: str, mode: GenerationMode) -> None:
    checks = POSITIVE_CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS
    failures: list[str] = []
    before = seeded.cases
    for operation in _operations(seeded.url):
        _exercise(operation, seeded, caller, mode, checks, failures)
    assert seeded.cases > before, "no case was generated"
    assert not failures, "\n\n".join(dict.fromkeys(failures))
