"""The SFU of the session server: forwards RTP between a session's two participants, never decoding.

Entry points: `media.server.MediaServer`, `media.config.MediaConfig`, `media.errors.MediaError`,
`media.events` (what the room layer is told). See docs/media.md.
"""
