"""HTTP edge of documents: validate, call the service, translate (docs/api.md, "Documents")."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field, model_validator
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from files.names import content_disposition
from session_server.auth import Identity, PermissionDenied, Role, authenticate, authenticate_admin
from session_server.context import AppContext
from session_server.errors import DomainError
from session_server.http import Body, NoQuery, documented, parse_query, read_json
from session_server.metrics import Metrics

from ..auth import USER_ID
from . import responses as out
from . import rules
from .rules import MAX_CLIENTS_PER_SHARE, DocumentMeta
from .service import DocumentService

NO_STORE = {"Cache-Control": "no-store"}


def _service(request: Request) -> DocumentService:
    ctx: AppContext = request.app.state.ctx
    service: DocumentService = ctx.documents
    return service


def _metrics(request: Request) -> Metrics:
    ctx: AppContext = request.app.state.ctx
    return ctx.metrics


def _outcome(exc: Exception) -> str:
    return exc.code if isinstance(exc, DomainError) else "error"


async def _counted(body: AsyncIterator[bytes | memoryview], request: Request) -> AsyncIterator[bytes | memoryview]:
    """The download's body, its bytes counted as they are sent (a cut-off download counts what went out)."""
    sent = _metrics(request).document_bytes.labels("downloaded")
    async for block in body:
        sent.inc(len(block))
        yield block


def _name(request: Request) -> str:
    from files.names import UnsafeName, decode_header_name

    raw = request.headers.get("x-filename")
    try:
        name = decode_header_name(raw) if raw is not None else request.query_params.get("name")
    except UnsafeName as exc:
        raise rules.InvalidDocumentName(str(exc)) from None
    if not name:
        raise rules.DocumentNameMissing("name the document in the X-Filename header (percent-encoded UTF-8) "
                                        "or the `name` query parameter")
    return name


@documented("Upload a document (the body is the document)", roles=("practitioner",),
            body_media_type="application/octet-stream", headers={"X-Filename": "the name, percent-encoded UTF-8"},
            responses={201: out.DocumentOut},
            errors=("permission_denied", "wrong_role", "document_too_large", "unsupported_document_type",
                    "active_content", "content_type_mismatch", "multipart_refused", "content_encoding_refused",
                    "empty_document", "invalid_document_name", "document_name_missing", "upload_idle_timeout",
                    "storage_full", "upload_interrupted"), tags=("documents",))
async def upload(request: Request) -> Response:
    metrics = _metrics(request)
    try:
        meta = await _upload(request)
    except Exception as exc:
        metrics.document_uploads.labels(_outcome(exc)).inc()
        raise
    metrics.document_uploads.labels("stored").inc()
    metrics.document_bytes.labels("uploaded").inc(meta.size)
    return JSONResponse(meta.public(), status_code=201,
                        headers={"Location": f"/v1/documents/{meta.id}", **NO_STORE})


async def _upload(request: Request) -> DocumentMeta:
    identity = authenticate(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Never inflate on the server: a compressed body is how archive bombs get in.
        raise rules.ContentEncodingRefused("send the document as it is, without Content-Encoding")
    declared = request.headers.get("content-length")
    length = int(declared) if declared is not None and declared.isdigit() else None
    try:
        meta = await _service(request).upload(identity, request.stream(), raw_name=_name(request),
                                              declared_type=request.headers.get("content-type"),
                                              declared_length=length)
    except ClientDisconnect:
        # Nothing was kept (the service cleans up); the answer only matters for the access log.
        raise rules.UploadInterrupted("the client went away before the upload finished") from None
    return meta


@documented("Documents: a practitioner's own, or those shared with a client", roles=("practitioner", "client"),
            query=NoQuery, responses={200: out.DocumentsOut}, errors=("permission_denied",), tags=("documents",))
async def list_documents(request: Request) -> Response:
    identity = authenticate(request)
    parse_query(request, NoQuery)
    service = _service(request)
    if identity.role is Role.PRACTITIONER:
        return JSONResponse({"documents": await service.list_owned(identity)}, headers=NO_STORE)
    if identity.role is Role.CLIENT:
        return JSONResponse({"documents": await service.list_shared_with(identity)}, headers=NO_STORE)
    raise PermissionDenied("documents are listed for practitioners and clients only")


@documented("A document's metadata", query=NoQuery, responses={200: out.DocumentLinkOut},
            errors=("permission_denied", "wrong_role", "document_not_found", "document_deleted"), tags=("documents",))
async def get_document(request: Request) -> Response:
    identity = authenticate(request)
    parse_query(request, NoQuery)
    doc = await _service(request).readable(identity, request.path_params["document_id"])
    return JSONResponse({**doc.public(), "download_url": f"/v1/documents/{doc.id}/content"},
                        headers=NO_STORE)


@documented("Delete a document (crypto-shredding)", roles=("practitioner",), responses={204: None},
            errors=("permission_denied", "wrong_role", "document_not_found", "document_deleted"),
            tags=("documents",))
async def delete_document(request: Request) -> Response:
    identity = authenticate(request)
    await _service(request).delete(identity, request.path_params["document_id"])
    return Response(status_code=204, headers=NO_STORE)


@documented("Download a document (ranges allowed)", headers={"Range": "bytes=a-b, a- or -n"},
            responses={200: "*/*", 206: "*/*"},
            errors=("permission_denied", "wrong_role", "document_not_found", "document_deleted",
                    "range_not_satisfiable", "document_integrity_failed", "document_tampered",
                    "document_key_unavailable", "document_missing"), tags=("documents",))
async def download(request: Request) -> Response:
    metrics = _metrics(request)
    try:
        identity = authenticate(request)
        dl = await _service(request).open_download(identity, request.path_params["document_id"],
                                                   request.headers.get("range"))
    except Exception as exc:
        metrics.document_downloads.labels(_outcome(exc)).inc()
        raise
    metrics.document_downloads.labels("served").inc()
    media_type = dl.doc.media_type + ("; charset=utf-8" if dl.doc.media_type == "text/plain" else "")
    headers = {
        "Content-Length": str(dl.length),
        "Content-Disposition": content_disposition(dl.doc.name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Accept-Ranges": "bytes",
    }
    if dl.status == 206:
        headers["Content-Range"] = f"bytes {dl.start}-{dl.start + dl.length - 1}/{dl.doc.size}"
    return StreamingResponse(_counted(dl.body, request), status_code=dl.status, media_type=media_type,
                             headers=headers)


class ShareRequest(Body):
    booking_id: str | None = Field(default=None, pattern=USER_ID.pattern,
                                   description="share with this booking's client (give this, client_ids or both)")
    client_ids: list[str] = Field(default_factory=list, max_length=MAX_CLIENTS_PER_SHARE,
                                  description="share with these clients")

    @model_validator(mode="after")
    def _one_target(self) -> ShareRequest:
        if self.booking_id is None and not self.client_ids:
            raise ValueError("give a booking_id, client_ids, or both")
        for c in self.client_ids:
            if not USER_ID.fullmatch(c):
                raise ValueError("client ids are 1 to 128 letters, digits and ._@-")
        return self


@documented("Share a document with a booking or clients", roles=("practitioner",), body=ShareRequest,
            responses={200: out.SharedOut, 201: out.SharedOut},
            errors=("permission_denied", "wrong_role", "document_not_found", "document_deleted",
                    "booking_not_found", "booking_cancelled"), tags=("documents",))
async def share(request: Request) -> Response:
    identity = authenticate(request)
    body = await read_json(request, ShareRequest)
    shares = await _service(request).share(identity, request.path_params["document_id"],
                                           booking_id=body.booking_id, client_ids=body.client_ids)
    status = 201 if any(s["created"] for s in shares) else 200
    return JSONResponse({"shares": shares}, status_code=status, headers=NO_STORE)


@documented("A document's shares", roles=("practitioner",), query=NoQuery, responses={200: out.SharesOut},
            errors=("permission_denied", "wrong_role", "document_not_found", "document_deleted"),
            tags=("documents",))
async def list_shares(request: Request) -> Response:
    identity = authenticate(request)
    parse_query(request, NoQuery)
    shares = await _service(request).shares(identity, request.path_params["document_id"])
    return JSONResponse({"shares": [s.public() for s in shares]}, headers=NO_STORE)


@documented("Revoke a share", roles=("practitioner",), responses={204: None},
            errors=("permission_denied", "wrong_role", "document_not_found", "document_deleted",
                    "share_not_found", "share_already_revoked"), tags=("documents",))
async def revoke(request: Request) -> Response:
    identity = authenticate(request)
    await _service(request).revoke(identity, request.path_params["document_id"],
                                   request.path_params["share_id"])
    return Response(status_code=204, headers=NO_STORE)


class AuditQuery(Body):
    limit: int = Field(default=100, ge=1, le=1000)


def _audit_identity(request: Request) -> Identity:
    if request.headers.get("authorization", "").lower().startswith("basic "):
        return authenticate_admin(request)
    return authenticate(request)


@documented("A document's downloads", auth=("bearer", "api_key"), roles=("practitioner", "admin"), query=AuditQuery,
            responses={200: out.AuditOut},
            errors=("permission_denied", "wrong_role", "document_not_found", "document_deleted"),
            tags=("documents",))
async def audit(request: Request) -> Response:
    identity = _audit_identity(request)
    query = parse_query(request, AuditQuery)
    entries = await _service(request).audit(identity, request.path_params["document_id"], query.limit)
    return JSONResponse({"document_id": request.path_params["document_id"], "downloads": entries},
                        headers=NO_STORE)


@documented("The documents shared with a booking", roles=("practitioner", "client"),
            query=NoQuery, responses={200: out.BookingDocumentsOut},
            errors=("permission_denied", "wrong_role", "booking_not_found"),
            tags=("documents",))
async def booking_documents(request: Request) -> Response:
    identity = authenticate(request)
    parse_query(request, NoQuery)
    docs = await _service(request).list_for_booking(identity, request.path_params["booking_id"])
    return JSONResponse({"booking_id": request.path_params["booking_id"], "documents": docs},
                        headers=NO_STORE)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/documents", upload, methods=["POST"]),
        Route("/v1/documents", list_documents, methods=["GET"]),
        Route("/v1/documents/{document_id}", get_document, methods=["GET"]),
        Route("/v1/documents/{document_id}", delete_document, methods=["DELETE"]),
        Route("/v1/documents/{document_id}/content", download, methods=["GET"]),
        Route("/v1/documents/{document_id}/shares", share, methods=["POST"]),
        Route("/v1/documents/{document_id}/shares", list_shares, methods=["GET"]),
        Route("/v1/documents/{document_id}/shares/{share_id}", revoke, methods=["DELETE"]),
        Route("/v1/documents/{document_id}/audit", audit, methods=["GET"]),
        Route("/v1/bookings/{booking_id}/documents", booking_documents, methods=["GET"]),
    ]
