"""The server's front page (`GET /`) and its icon: what this server is, in the visitor's language, and where
a person who has a session goes (the link they were sent). Not an API: the API is at /docs/api."""

from __future__ import annotations

from html import escape
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .http import documented
from .money import LANGUAGES, accepted_language
from .openapi import PAGE_HEADERS

STATIC_DIR = Path(__file__).resolve().parent / "static" / "home"

# What the page says, per language: a title, then paragraphs; `{docs}` marks the API page's link.
TEXT: dict[str, dict[str, str | list[str]]] = {
    "ar": {
        "dir": "rtl", "language": "اللغة", "title": "خادم جلسات الاستشارة",
        "paragraphs": [
            "يستضيف هذا الخادم غرف جلسات الاستشارة بالفيديو: الصورة والصوت والمحادثة والمستندات المشتركة.",
            "هل لديك جلسة؟ افتح الرابط الذي وصلك عند الحجز. الرابط خاص بك ويفتح غرفة جلستك مباشرة، "
            "ولا حاجة إلى حساب أو برنامج.",
            "إذا ضاع الرابط أو انتهت صلاحيته، اطلب رابطًا جديدًا من المنصة التي حجزت منها.",
        ],
        "small": "للمطورين والمشغّلين: {docs}.", "docs": "توثيق واجهة البرمجة (بالإنجليزية)",
    },
    "fr": {
        "dir": "ltr", "language": "Langue", "title": "Serveur de séances de consultation",
        "paragraphs": [
            "Ce serveur héberge les salles des séances de consultation en vidéo : image, son, messages et "
            "documents partagés.",
            "Vous avez une séance ? Ouvrez le lien reçu lors de la réservation. Il vous est personnel et ouvre "
            "directement la salle de votre séance, sans compte ni logiciel.",
            "Lien perdu ou expiré ? Demandez-en un nouveau sur la plateforme où vous avez réservé.",
        ],
        "small": "Pour les développeurs et les exploitants : {docs}.", "docs": "la documentation de l'API (en anglais)",
    },
    "en": {
        "dir": "ltr", "language": "Language", "title": "Consultation session server",
        "paragraphs": [
            "This server hosts the rooms of video consultation sessions: picture, sound, chat and shared "
            "documents.",
            "Do you have a session? Open the link you received when you booked. It is yours alone and opens "
            "your session's room directly, with no account or app.",
            "Lost the link, or has it expired? Ask for a new one on the platform where you booked.",
        ],
        "small": "For developers and operators: {docs}.", "docs": "the API documentation",
    },
}


def choose_language(request: Request) -> str:
    """`?lang=` when it is one of ours, else the browser's first language we speak, else Arabic."""
    asked = request.query_params.get("lang", "")
    if asked in LANGUAGES:
        return asked
    return accepted_language(request.headers.get("accept-language", ""), default="ar")


def render(lang: str) -> str:
    text = TEXT[lang]
    paragraphs = text["paragraphs"]
    assert isinstance(paragraphs, list)
    # the API's page is in English only: the link says so in the visitor's language (hreflang for tools)
    docs = f'<a href="/docs/api" hreflang="en">{escape(str(text["docs"]))}</a>'
    body = "\n".join([f"<h1>{escape(str(text['title']))}</h1>",
                      *(f"<p>{escape(p)}</p>" for p in paragraphs),
                      f'<p class="small">{escape(str(text["small"])).replace("{docs}", docs)}</p>'])
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    values = {"lang": lang, "dir": str(text["dir"]), "title": escape(str(text["title"])),
              "language": escape(str(text["language"])), "body": body,
              **{f"cur_{code}": ' aria-current="page"' if code == lang else "" for code in LANGUAGES}}
    for key, value in values.items():
        page = page.replace("{" + key + "}", value)
    return page


@documented("What this server is, for a person who opens its address (Arabic, French or English)", auth=(),
            responses={200: "text/html"}, tags=("meta",))
async def home_page(request: Request) -> Response:
    csp = PAGE_HEADERS["Content-Security-Policy"] + "; img-src 'self'"  # the icon in the page's bar
    return HTMLResponse(render(choose_language(request)),
                        headers={**PAGE_HEADERS, "Content-Security-Policy": csp, "Vary": "Accept-Language"})


@documented("The server's icon (SVG)", auth=(), responses={200: "image/svg+xml"}, tags=("meta",))
async def favicon(request: Request) -> Response:
    return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


def routes() -> list[BaseRoute]:
    return [
        Route("/", home_page, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Mount("/static/home", StaticFiles(directory=STATIC_DIR), name="home-static"),
        # what the pages share (the token from the fragment, the language): static/common/page.js
        Mount("/static/common", StaticFiles(directory=STATIC_DIR.parent / "common"), name="common-static"),
    ]
