"""The protocol's pure parts: decoding, rate limiting, presence decisions, the chat cipher."""

from __future__ import annotations

import pytest

from signaling import messages as m
from signaling.chatcrypto import ChatDecryptError, RoomCipher
from signaling.presence import Entry, Liveness, Timings, connection_liveness, expired
from signaling.ratelimit import TokenBucket


@pytest.mark.parametrize(("raw", "code", "ref"), [
    ("{", "invalid_json", None),
    ("3", "invalid_message", None),
    ('{"type": 3, "id": "x"}', "invalid_message", "x"),
    ('{"type": "nope", "id": "x"}', "unknown_type", "x"),
    ('{"type": "offer", "id": "x"}', "invalid_message", "x"),
    ('{"type": "offer", "id": "x", "sdp": "v=0", "colour": 1}', "invalid_message", "x"),
    ('{"type": "ping", "id": ""}', "invalid_message", None),
    ('{"type": "chat.received", "id": "x", "seq": 1.5}', "invalid_message", "x"),
])
def test_bad_frames_are_named_precisely(raw: str, code: str, ref: str | None) -> None:
    with pytest.raises(m.ProtocolError) as info:
        m.decode(raw)
    assert (info.value.code, info.value.ref) == (code, ref)


def test_errors_never_echo_the_offending_value() -> None:
    with pytest.raises(m.ProtocolError) as info:
        m.decode('{"type": "typing", "id": "x", "active": "my secret diagnosis"}')
    assert "diagnosis" not in info.value.message


def test_messages_decode_into_typed_values() -> None:
    msg = m.decode('{"type": "candidate", "id": "c", "candidate": {"candidate": "candidate:1", '
                   '"sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "u"}, "to": "p1"}')
    assert isinstance(msg, m.Candidate) and msg.candidate is not None
    assert (msg.candidate.sdp_mid, msg.candidate.sdp_m_line_index, msg.to) == ("0", 0, "p1")
    assert m.decode('{"type": "join", "id": "j", "last_seq": 4}') == m.Join(id="j", last_seq=4)
    assert m.encode(m.RelayedOffer(id="s1", sdp="v=0", from_="p1")) == \
        '{"type":"offer","id":"s1","sdp":"v=0","from":"p1"}'


def test_a_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.5)
    assert bucket.take(0.5) and not bucket.take(0.5)


def test_silence_makes_a_connection_reconnecting_then_gone() -> None:
    t = Timings(interval_s=10, timeout_s=30)
    assert connection_liveness(t, 0, 14) is Liveness.FINE
    assert connection_liveness(t, 0, 15) is Liveness.RECONNECTING
    assert connection_liveness(t, 0, 30) is Liveness.GONE
    assert t.node_ttl_s + t.tick_s < t.timeout_s  # a dead node is noticed within the timeout


def test_dead_nodes_and_passed_deadlines_expire_entries() -> None:
    entries = [Entry("a", "c1", "n1", "connected", 0), Entry("b", "c2", "dead", "connected", 0),
               Entry("c", "c3", "dead", "reconnecting", 2_000), Entry("d", "c4", "n1", "reconnecting", 500)]
    out = {(e.participant_id, reason) for e, reason in expired(entries, {"n1"}, now_ms=1_000)}
    assert out == {("b", "node_lost"), ("d", "timeout")}


def test_a_chat_ciphertext_only_opens_in_its_own_room_at_its_own_position() -> None:
    key = bytes(range(32))
    sealed = RoomCipher("r1", key).seal(7, b"hello")
    assert RoomCipher("r1", key).open(7, sealed) == b"hello"
    for room, seq in (("r1", 8), ("r2", 7)):
        with pytest.raises(ChatDecryptError):
            RoomCipher(room, key).open(seq, sealed)
