"""The error catalogue, the OpenAPI document and the docs' error tables agree.

Every refusal is a typed catalogue class with a meaning; a code given ad hoc to a call (`code="..."`)
is listed by file and line by the last test below.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from starlette.applications import Starlette

from session_server.app import create_app
from session_server.errors import DomainError, catalogue, lookup
from session_server.openapi import (
    build,
    credentials_table,
    defaults_table,
    documented_routes,
    error_table,
    refusals,
    undocumented_routes,
)

from .conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
OWN_MODULES = ("errors.py", "http.py", "core_api.py", "auth.py", "openapi.py")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Starlette:
    return create_app(make_settings(tmp_path_factory.mktemp("catalogue"), "redis://127.0.0.1:1/0"))


@pytest.fixture(scope="module")
def document(app: Starlette) -> dict[str, Any]:
    return build(app.routes)


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert not errors, errors


def test_every_http_route_has_a_contract(app: Starlette) -> None:
    assert undocumented_routes(app.routes) == []


def test_every_refusal_in_the_document_names_its_codes(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            problems = {s: r for s, r in op["responses"].items() if int(s) >= 400}
            assert "500" in problems, f"{method} {path}"
            for status, response in problems.items():
                codes = response["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"]
                assert codes["status"]["const"] == int(status)
                assert codes["code"]["enum"], f"{method} {path} {status}"


def test_catalogue_entries_are_typed_and_explained_in_our_modules() -> None:
    own = [e for e in catalogue() if e.error.__module__ in ("session_server.errors", "session_server.http",
                                                           "session_server.auth")]
    assert {e.code for e in own} >= {"invalid_input", "json_expected", "token_expired", "bad_api_key",
                                     "redis_unavailable", "internal_error", "method_not_allowed"}
    assert all(e.meaning for e in own), [e.code for e in own if not e.meaning]


def test_every_catalogue_entry_has_a_meaning() -> None:
    missing = [f"{e.code} ({e.error.__module__}.{e.error.__qualname__})" for e in catalogue() if not e.meaning]
    assert not missing, "catalogue entries without a docstring:\n" + "\n".join(missing)


def _subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_one_class_per_code(app: Starlette) -> None:
    by_code: dict[str, list[str]] = {}
    for cls in _subclasses(DomainError):
        if "code" in cls.__dict__:
            by_code.setdefault(cls.code, []).append(f"{cls.__module__}.{cls.__qualname__}")
    twice = {code: names for code, names in by_code.items() if len(set(names)) > 1}
    assert twice == {}, "a code with a second class (raise the first one instead)"


# --- the docs ------------------------------------------------------------------------------------

_STATUS_CODE = re.compile(r"`?(\d{3}) `?([a-z][a-z_]+)`")  # 409 `slot_taken`, `404 booking_not_found`
_TABLE_ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([a-z_]+)`", re.M)
_LIST = re.compile(r"(\d{3})\)?(?: codes)?:\s*((?:`[a-z_]+`[^`.;]*?)+)[.;]")  # "Errors (422): `a`, `b`."
_BACKTICKED = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+|[a-z]+)`")


def documented_http_codes() -> dict[str, set[int]]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    found: dict[str, set[int]] = {}
    for pattern in (_STATUS_CODE, _TABLE_ROW):
        for status, code in pattern.findall(text):
            found.setdefault(code, set()).add(int(status))
    for status, run in _LIST.findall(text):
        for code in re.findall(r"`([a-z_]+)`", run):
            found.setdefault(code, set()).add(int(status))
    return found


def _status(code: str) -> int | None:
    entry = lookup(code)
    return entry.status if entry is not None else None


def test_every_documented_http_code_is_known_with_its_status(app: Starlette) -> None:
    wrong = []
    for code, statuses in sorted(documented_http_codes().items()):
        status = _status(code)
        if status is None:
            wrong.append(f"{code}: documented in docs/api.md, but in no catalogue entry")
        elif status not in statuses:
            wrong.append(f"{code}: docs/api.md says {sorted(statuses)}, the server answers {status}")
    assert not wrong, "\n".join(wrong)


def test_every_code_a_route_can_answer_is_documented(app: Starlette) -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    mentioned = set(_BACKTICKED.findall(text))
    raised = {code for _, doc in documented_routes(app.routes) for codes in refusals(doc).values() for code in codes}
    assert sorted(raised - mentioned) == []


def test_the_error_table_in_the_docs_is_generated_from_the_catalogue(app: Starlette) -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    begin = "<!-- generated from the error catalogue: do not edit by hand -->\n"
    table = text.split(begin, 1)[1].split("<!-- end of generated table -->", 1)[0].strip()
    expected = error_table(app.routes)
    assert table == expected, "docs/api.md's error table is stale; paste this one:\n" + expected


def test_every_code_in_the_protocol_table_is_raised_somewhere(app: Starlette) -> None:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    table = text.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    codes = {c for line in table.splitlines() if line.startswith("| `")
             for c in re.findall(r"`([a-z_]+)`", line.split("|")[1])}
    sources = "\n".join(p.read_text(encoding="utf-8") for d in ("session_server", "signaling", "media")
                        for p in (ROOT / d).rglob("*.py"))
    unknown = sorted(c for c in codes if lookup(c) is None and f'"{c}"' not in sources)
    assert unknown == [], f"docs/protocol.md lists codes nothing raises: {unknown}"


# --- codes still raised ad hoc -------------------------------------------------------------------


def ad_hoc_codes(path: Path) -> list[str]:
    """`code="..."` given to a call, by line: a refusal that is not (yet) a typed catalogue class."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {kw.value.value}")
    return out


@pytest.mark.parametrize("name", OWN_MODULES)
def test_the_edges_raise_typed_errors_only(name: str) -> None:
    assert ad_hoc_codes(ROOT / "session_server" / name) == []


def test_no_module_raises_a_code_ad_hoc() -> None:
    found = [hit for p in sorted((ROOT / "session_server").rglob("*.py")) for hit in ad_hoc_codes(p)]
    assert not found, "raised ad hoc:\n" + "\n".join(found)


# --- credentials and defaults ---------------------------------------------------------------------


def _generated(name: str) -> str:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    begin = f"<!-- generated from the routes' contracts: {name} -->\n"
    return text.split(begin, 1)[1].split(f"<!-- end of generated {name} -->", 1)[0].strip()


@pytest.mark.parametrize(("name", "make"), [("credentials", credentials_table), ("defaults", defaults_table)])
def test_the_credentials_and_defaults_tables_in_the_docs_are_generated_from_the_routes(
        app: Starlette, name: str, make: Callable[[Any], str]) -> None:
    expected = make(app.routes)
    assert _generated(name) == expected, f"docs/api.md's {name} table is stale; paste this one:\n" + expected


def test_every_default_says_what_it_means(app: Starlette) -> None:
    rows = [line.split("|") for line in defaults_table(app.routes).splitlines()[2:]]
    assert rows
    assert [f"{r[1].strip()} {r[2].strip()}" for r in rows if not r[4].strip()] == []
    fields = {f"{r[1].strip()} {r[2].strip()}": r[3].strip() for r in rows}
    assert fields["POST `/v1/tokens` body `ttl_s`"] == "`3600`"
    assert fields["POST `/v1/codes` body `max_uses`"] == "`0`"
