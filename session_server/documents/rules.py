"""Who may do what with a document: pure decisions, no I/O and no clock.

- Only practitioners upload; a document belongs to the practitioner who uploaded it.
- The owner reads, shares, revokes, deletes and reads the audit log of their document.
- A client reads a document through an active share: one naming them, or one naming a booking whose
  client they are (during and after the session, not once the booking is cancelled).
- Support staff never read documents; admins read audit logs but not contents.
- A caller who may not read a document is told it does not exist (its existence is health data too).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from files.format import FormatError
from files.sniff import Refused
from session_server.auth import Identity, Permission, PermissionDenied, Role
from session_server.bookings.errors import BookingNotFound
from session_server.bookings.model import Booking, BookingStatus
from session_server.errors import (
    Conflict,
    DomainError,
    Gone,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)

DOCUMENT_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_CLIENTS_PER_SHARE = 100


class DocumentNotFound(NotFound):
    """No document with this id, or not one the caller may read (it is not said which)."""

    code = "document_not_found"


class DocumentDeleted(Gone):
    """The owner deleted this document; its content is gone for good."""

    code = "document_deleted"


class ShareNotFound(NotFound):
    """No share with this id on this document."""

    code = "share_not_found"


class DocumentTooLarge(PayloadTooLarge):
    """The document is over `SESSION_SERVER_DOCUMENT_MAX_BYTES` (declared or while streaming)."""

    code = "document_too_large"


class DocumentTypeRefused(UnsupportedMediaType):
    """The content is not an allowed type (executables, archives, scripts, other formats)."""

    code = "unsupported_document_type"


class EmptyDocument(InvalidInput):
    """The upload has zero bytes."""

    code = "empty_document"


class MultipartRefused(DocumentTypeRefused):
    """A multipart form upload: send the document itself as the body."""

    code = "multipart_refused"


class ContentTypeMismatch(DocumentTypeRefused):
    """`Content-Type` names another type than the content's bytes show."""

    code = "content_type_mismatch"


class ActiveContent(DocumentTypeRefused):
    """Text holding HTML, SVG or script markup, which a browser could run."""

    code = "active_content"


class ContentEncodingRefused(UnsupportedMediaType):
    """A compressed body (`Content-Encoding: gzip`, ...): the server never inflates uploads."""

    code = "content_encoding_refused"


class InvalidDocumentName(InvalidInput):
    """A NUL in the name, or nothing left of it once it is made safe."""

    code = "invalid_document_name"


class DocumentNameMissing(InvalidInput):
    """No `X-Filename` header and no `name` query parameter."""

    code = "document_name_missing"


class UploadInterrupted(InvalidInput):
    """The client went away before the upload finished; nothing was kept."""

    code = "upload_interrupted"


class BookingCancelled(Conflict):
    """The booking is cancelled: its documents cannot be shared through it."""

    code = "booking_cancelled"


# What a desktop runs, installs or renders as a page when the file is opened by its name, whatever the
# bytes: refused as names as surely as their content is refused by type.
EXECUTABLE_EXTENSIONS = frozenset({
    "exe", "com", "bat", "cmd", "scr", "pif", "msi", "msp", "mst", "msc", "cpl", "dll", "sys", "ocx", "drv",
    "jar", "js", "jse", "mjs", "vb", "vbs", "vbe", "wsf", "wsh", "ws", "wsc", "ps1", "psm1", "psd1", "hta",
    "lnk", "url", "scf", "inf", "reg", "chm", "application", "appref-ms", "gadget", "msix", "appx",
    "appxbundle", "msixbundle", "sh", "bash", "zsh", "csh", "ksh", "command", "run", "bin", "app", "dmg", "pkg",
    "deb", "rpm", "apk", "desktop", "iso", "img", "vhd", "vhdx", "html", "htm", "xhtml", "xht", "shtml",
    "mht", "mhtml", "svg", "svgz", "py", "pyw",
})


def check_name(name: str) -> None:
    """Refuse a name, as sanitised for storage, whose extension would open as a program.

    Judged on the result, not the input: removing a direction override can turn what read as
    `invoiceexe.pdf` into `invoicefdp.exe`. Systems ignore trailing dots and spaces and fold width and
    case, so the extension is read as they would read it.
    """
    folded = unicodedata.normalize("NFKC", name).casefold().rstrip(". \u200c\u200d")
    _, dot, extension = folded.rpartition(".")
    if dot and extension in EXECUTABLE_EXTENSIONS:
        raise DocumentTypeRefused(f"a document named .{extension} would open as a program; rename it")


def type_refused(exc: Refused) -> DocumentTypeRefused:
    """The refusal of the sniffer (files.sniff), by its kind."""
    kinds: dict[str, type[DocumentTypeRefused]] = {"active_content": ActiveContent}
    return kinds.get(exc.code, DocumentTypeRefused)(str(exc))


class UploadIdle(DomainError):
    """Nothing arrived for `SESSION_SERVER_UPLOAD_IDLE_TIMEOUT_S`; the upload was dropped."""

    status, code, title = 408, "upload_idle_timeout", "Upload timed out"


class StorageFull(DomainError):
    """The document store's disk is full; nothing was saved."""

    status, code, title = 507, "storage_full", "Insufficient storage"


class DocumentIntegrityError(DomainError):
    """The stored document failed verification; no content was sent."""

    status, code, title = 500, "document_integrity_failed", "Document integrity check failed"


class DocumentTampered(DocumentIntegrityError):
    """The stored document was altered (its authentication failed); no content was sent."""

    code = "document_tampered"


class DocumentKeyUnavailable(DocumentIntegrityError):
    """The key that encrypted the stored document is not in the key ring."""

    code = "document_key_unavailable"


class DocumentMissing(DocumentIntegrityError):
    """The document's metadata exists but its stored file does not."""

    code = "document_missing"


def integrity_error(exc: FormatError, message: str) -> DocumentIntegrityError:
    """The refusal for a stored document that files.format would not open, by the reason it gave."""
    kinds: dict[str, type[DocumentIntegrityError]] = {
        "document_tampered": DocumentTampered, "document_key_unavailable": DocumentKeyUnavailable}
    return kinds.get(exc.code, DocumentIntegrityError)(message)


class ShareRevoked(Conflict):
    """This share was already revoked."""

    code = "share_already_revoked"


class ShareKind(enum.StrEnum):
    BOOKING = "booking"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class DocumentMeta:
    id: str
    owner_id: str
    name: str
    media_type: str
    size: int
    sha256: str
    created_at: int
    deleted: bool = False

    def public(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "media_type": self.media_type, "size": self.size,
                "sha256": self.sha256, "owner_id": self.owner_id, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Share:
    id: str
    document_id: str
    kind: ShareKind
    client_id: str  # for a booking share: the booking's client when it was shared
    booking_id: str  # "" for a client share
    created_at: int
    revoked_at: int  # 0 while active

    @property
    def active(self) -> bool:
        return self.revoked_at == 0

    def public(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "document_id": self.document_id, "kind": self.kind.value,
                                  "client_id": self.client_id, "created_at": self.created_at,
                                  "revoked_at": self.revoked_at or None}
        if self.kind is ShareKind.BOOKING:
            out["booking_id"] = self.booking_id
        return out


def require_uploader(identity: Identity) -> None:
    identity.require(Permission.DOCUMENTS_WRITE)
    identity.require_role(Role.PRACTITIONER)


def require_owner(identity: Identity, doc: DocumentMeta | None) -> DocumentMeta:
    """The document, if `identity` owns it; otherwise it does not exist for them."""
    identity.require(Permission.DOCUMENTS_WRITE)
    if doc is None or doc.owner_id != identity.sub or identity.role is not Role.PRACTITIONER:
        raise DocumentNotFound("no such document")
    if doc.deleted:
        raise DocumentDeleted("the document was deleted")
    return doc


def share_grants(share: Share, doc: DocumentMeta, identity: Identity,
                 bookings: Mapping[str, Booking | None]) -> bool:
    if not share.active or share.document_id != doc.id:
        return False
    if share.kind is ShareKind.CLIENT:
        return share.client_id == identity.sub
    booking = bookings.get(share.booking_id)
    return (booking is not None and booking.client_id == identity.sub
            and booking.practitioner_id == doc.owner_id and booking.status is not BookingStatus.CANCELLED)


def may_read(identity: Identity, doc: DocumentMeta, shares: Iterable[Share],
             bookings: Mapping[str, Booking | None]) -> bool:
    if not identity.can(Permission.DOCUMENTS_READ) or identity.role in (Role.SUPPORT, Role.ADMIN):
        return False
    if doc.deleted:
        return False
    if identity.role is Role.PRACTITIONER:
        return doc.owner_id == identity.sub
    return identity.role is Role.CLIENT and any(share_grants(s, doc, identity, bookings) for s in shares)


def require_reader(identity: Identity, doc: DocumentMeta | None, shares: Iterable[Share],
                   bookings: Mapping[str, Booking | None]) -> DocumentMeta:
    if identity.role is Role.SUPPORT:
        raise PermissionDenied("support staff never see documents")
    identity.require(Permission.DOCUMENTS_READ)
    if doc is None:
        raise DocumentNotFound("no such document")
    if doc.deleted and doc.owner_id == identity.sub:
        raise DocumentDeleted("the document was deleted")
    if not may_read(identity, doc, shares, bookings):
        raise DocumentNotFound("no such document")
    return doc


def may_read_audit(identity: Identity, owner_id: str) -> bool:
    return identity.role is Role.ADMIN or (identity.role is Role.PRACTITIONER and identity.sub == owner_id)


def check_booking_for_share(booking: Booking | None, owner_id: str) -> Booking:
    if booking is None or booking.practitioner_id != owner_id:
        raise BookingNotFound("no such booking among yours")
    if booking.status is BookingStatus.CANCELLED:
        raise BookingCancelled("the booking is cancelled")
    return booking


def check_not_multipart(declared: str | None) -> None:
    """The body is the document itself: a form upload is refused before a byte of it is read."""
    if declared and declared.strip().lower().startswith("multipart/"):
        raise MultipartRefused("send the document itself as the request body, not a multipart form")


def check_declared_type(declared: str | None, sniffed: str) -> None:
    """A Content-Type that names another type than the content is refused, not silently corrected."""
    if not declared:
        return
    base = declared.split(";", 1)[0].strip().lower()
    # curl --data-binary sends x-www-form-urlencoded unless told otherwise: it names no type.
    if base in ("", "application/octet-stream", "application/x-www-form-urlencoded"):
        return
    check_not_multipart(base)
    if base != sniffed:
        raise ContentTypeMismatch(f"the body is {sniffed} but the Content-Type says {base}")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for as (start, end) inclusive; None for the whole document.

    Several ranges are answered with the whole document (allowed by RFC 9110); an unsatisfiable
    range raises RangeNotSatisfiable.
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not spec or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable(size)
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    if start < 0 or end < start:
        return None
    return start, min(end, size - 1)


class RangeNotSatisfiable(DomainError):
    """The `Range` starts past the document's end (`Content-Range` gives its size)."""

    status, code, title = 416, "range_not_satisfiable", "Range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the document has {size} bytes", headers={"Content-Range": f"bytes */{size}"})
