"""The shapes documents' HTTP routes answer with, for the OpenAPI document (session_server.openapi)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentOut(View):
    """An uploaded document's metadata (`created_at` in epoch seconds)."""

    id: str
    name: str
    media_type: str
    size: int
    sha256: str
    owner_id: str
    created_at: int


class DocumentLinkOut(DocumentOut):
    """A document's metadata and where to download it."""

    download_url: str


class ShareOut(View):
    id: str
    document_id: str
    kind: str
    client_id: str
    booking_id: str | None = None
    created_at: int
    revoked_at: int | None


class OwnedDocumentOut(DocumentOut):
    shares: list[ShareOut]


class SharedDocumentOut(View):
    id: str
    name: str
    media_type: str
    size: int
    owner_id: str
    shared_at: int
    booking_id: str | None
    download_url: str


class DocumentsOut(View):
    """A practitioner's documents with their shares, or what was shared with a client."""

    documents: list[OwnedDocumentOut] | list[SharedDocumentOut]


class ShareResultOut(View):
    share_id: str
    kind: str
    client_id: str
    booking_id: str | None
    created: bool


class SharedOut(View):
    """The shares asked for; `created` is false for one that already existed."""

    shares: list[ShareResultOut]


class SharesOut(View):
    """A document's shares, revoked ones included."""

    shares: list[ShareOut]


class DownloadOut(View):
    document_id: str
    user_id: str
    role: str
    at: int
    range: list[int] | None


class AuditOut(View):
    """A document's downloads, newest first."""

    document_id: str
    downloads: list[DownloadOut]


class BookingDocumentsOut(View):
    """The documents shared with a booking."""

    booking_id: str
    documents: list[SharedDocumentOut]
