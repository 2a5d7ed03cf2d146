"""Chat at rest: AES-256-GCM under the room's data key, the room id and sequence as associated data.

Binding the sequence number into the tag means a stored message cannot be moved to another position
or another room without failing to decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class ChatDecryptError(Exception):
    code = "chat_decrypt_failed"


class RoomCipher:
    def __init__(self, room_id: str, data_key: bytes) -> None:
        self._room = room_id.encode()
        self._aead = AESGCM(data_key)

    def _ad(self, seq: int) -> bytes:
        return b"chat:" + self._room + b":" + str(seq).encode()

    def seal(self, seq: int, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, self._ad(seq))

    def open(self, seq: int, blob: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._ad(seq))
        except (InvalidTag, ValueError):
            raise ChatDecryptError("a stored chat message does not decrypt") from None
