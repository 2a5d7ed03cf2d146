"""The shapes notifications' HTTP routes answer with, for the OpenAPI document (session_server.openapi)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class NotificationOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    created_at: str
    data: dict[str, Any]
    read: bool


class NotificationsOut(BaseModel):
    """The caller's notifications, newest first, and how many are unread."""

    model_config = ConfigDict(extra="forbid")

    notifications: list[NotificationOut]
    unread_count: int


class MarkedOut(BaseModel):
    """How many notifications this marked read, and how many are still unread."""

    model_config = ConfigDict(extra="forbid")

    marked: int
    unread_count: int
