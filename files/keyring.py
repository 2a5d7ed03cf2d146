"""The key ring: master keys by key id, wrapping the per-object data keys (envelope encryption).

Data (a document, a room's chat) is encrypted with a random data key of its own; only the data key,
wrapped by a master key under AES-256-GCM with the object's identity as associated data, is stored.
Rotating master keys re-wraps data keys and never rewrites the data; destroying a wrapped data key
destroys the data (crypto-shredding).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
KEY_BYTES = 32


class KeyRingError(Exception):
    code = "key_error"


class UnknownKeyId(KeyRingError):
    code = "unknown_key_id"


class UnwrapFailed(KeyRingError):
    code = "key_unwrap_failed"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    key_id: str
    blob: bytes  # nonce || ciphertext || tag


class KeyRing:
    def __init__(self, master_keys: Mapping[str, bytes], active_key_id: str) -> None:
        if active_key_id not in master_keys:
            raise ValueError("the active key id must be one of the master keys")
        for kid, key in master_keys.items():
            if len(key) != KEY_BYTES:
                raise ValueError(f"master key {kid!r} must be {KEY_BYTES} bytes")
        self._keys = {kid: AESGCM(key) for kid, key in master_keys.items()}
        self.active_key_id = active_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    @staticmethod
    def new_data_key() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def wrap(self, data_key: bytes, context: bytes, key_id: str | None = None) -> WrappedKey:
        kid = key_id or self.active_key_id
        aead = self._aead(kid)
        nonce = os.urandom(NONCE_BYTES)
        return WrappedKey(kid, nonce + aead.encrypt(nonce, data_key, context))

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        aead = self._aead(wrapped.key_id)
        blob = wrapped.blob
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
        except (InvalidTag, ValueError):
            raise UnwrapFailed("the data key does not unwrap: wrong key or tampered") from None

    def rewrap(self, wrapped: WrappedKey, context: bytes) -> WrappedKey:
        """The same data key under the active master key (a no-op result if it already is)."""
        if wrapped.key_id == self.active_key_id:
            return wrapped
        return self.wrap(self.unwrap(wrapped, context), context)

    def _aead(self, key_id: str) -> AESGCM:
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyId(f"no master key with id {key_id!r}") from None
