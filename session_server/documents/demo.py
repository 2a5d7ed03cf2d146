"""A demo worksheet, shared with the demo booking, so the room shows a document from the first run."""

from __future__ import annotations

from collections.abc import AsyncIterator

from session_server.auth import ROLE_PERMISSIONS, Identity, Role
from session_server.context import AppContext

from .rules import DocumentMeta

DEMO_NAME = "ورقة عمل - Fiche de travail.txt"
DEMO_TEXT = (
    "ورقة عمل: تمرين التنفس\n"
    "Fiche de travail : exercice de respiration\n\n"
    "1. Inspirez par le nez pendant 4 secondes.\n"
    "2. Retenez votre souffle pendant 4 secondes.\n"
    "3. Expirez lentement pendant 6 secondes.\n"
    "كرر التمرين خمس مرات، مرتين في اليوم.\n"
)


async def seed_demo_document(ctx: AppContext, practitioner_id: str, booking_id: str) -> DocumentMeta:
    """Upload the demo worksheet as the practitioner and share it with the booking (idempotent share)."""
    owner = Identity(sub=practitioner_id, name="demo", role=Role.PRACTITIONER,
                     permissions=ROLE_PERMISSIONS[Role.PRACTITIONER], grants=None,
                     expires_at=int(ctx.clock.now()) + 60)

    async def body() -> AsyncIterator[bytes]:
        yield DEMO_TEXT.encode()

    service = ctx.documents
    existing = [d for d in await service.store.owned(practitioner_id) if d.name == DEMO_NAME]
    doc = existing[0] if existing else await service.upload(
        owner, body(), raw_name=DEMO_NAME, declared_type="text/plain", declared_length=None)
    await service.share(owner, doc.id, booking_id=booking_id, client_ids=[])
    return doc
