"""The compose file's TLS proxy, for real: nginx with the configuration in deploy/nginx/ in front of a real
server. A room's WebSocket works through it over TLS, `/metrics` does not pass, and port 443 hands the
TURN host name, still encrypted, to the TURN server's TLS port.

The configuration is the one the compose file mounts, filled in as the nginx image fills it in (its
`${NAME}` inputs), with only its addresses moved to free loopback ports for the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from .conftest import LiveServer
from .rooms_support import CLIENT, Peer, room_server, write_booking
from .support import free_port, require

ROOT = Path(__file__).parent.parent
PUBLIC_HOST, TURN_HOST = "sessions.example.org", "turn.example.org"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    require(found is not None and STREAM_MODULE.exists(), "nginx and its stream module are not installed")
    assert found is not None
    return found


def _certificate(directory: Path) -> Path:
    """One self-signed certificate for both names, as TLS_CERT_DIR holds it (fullchain.pem, privkey.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PUBLIC_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(PUBLIC_HOST), x509.DNSName(TURN_HOST)]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir()
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "fullchain.pem"


@dataclass
class Proxy:
    tls_port: int  # the compose file's 443
    http_port: int  # its 80
    turn_port: int  # coturn's TLS port behind 443
    trust: ssl.SSLContext  # a client context that trusts the test certificate


def _render(template: Path, ports: dict[str, int], server_port: int, tls_dir: Path) -> str:
    text = template.read_text().replace("${PUBLIC_HOST}", PUBLIC_HOST).replace("${TURN_HOST}", TURN_HOST)
    lines = [line for line in text.splitlines() if "listen [::]" not in line]  # loopback only in tests
    text = "\n".join(lines)
    # One pass, so that a port written in is never rewritten by a later rule (a free port such as 53491
    # would otherwise match "127.0.0.1:5349" and become an invalid six-digit port).
    rules = {"listen 443;": f"listen 127.0.0.1:{ports['443']};",
             "listen 80;": f"listen 127.0.0.1:{ports['80']};",
             "127.0.0.1:8443": f"127.0.0.1:{ports['8443']}",
             "127.0.0.1:5349": f"127.0.0.1:{ports['5349']}",
             "http://127.0.0.1:8000": f"http://127.0.0.1:{server_port}",
             "/tls/": f"{tls_dir}/"}
    pattern = re.compile("|".join(re.escape(key) for key in rules))
    text = pattern.sub(lambda match: rules[match.group(0)], text)
    return text


@contextlib.asynccontextmanager
async def nginx_in_front_of(server: LiveServer, tmp_path: Path) -> AsyncIterator[Proxy]:
    binary = _nginx()
    tls_dir = tmp_path / "tls"
    cafile = _certificate(tls_dir)
    ports = {p: free_port() for p in ("443", "80", "8443", "5349")}
    conf_dir = tmp_path / "nginx"
    conf_dir.mkdir()
    (conf_dir / "http.conf").write_text(_render(ROOT / "deploy/nginx/templates/default.conf.template", ports,
                                                server.port, tls_dir))
    (conf_dir / "stream.conf").write_text(_render(ROOT / "deploy/nginx/stream_templates/tls-443.conf.template",
                                                  ports, server.port, tls_dir))
    temp = " ".join(f"{kind}_temp_path {conf_dir}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                          "uwsgi", "scgi"))
    (conf_dir / "nginx.conf").write_text(f"""
load_module {STREAM_MODULE};
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log info;
events {{ worker_connections 64; }}
http {{ {temp} include {conf_dir}/http.conf; }}
stream {{ include {conf_dir}/stream.conf; }}
""")
    check = await asyncio.create_subprocess_exec(binary, "-t", "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf"),
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, errors = await asyncio.wait_for(check.communicate(), 30)
    assert check.returncode == 0, errors.decode()
    proc = await asyncio.create_subprocess_exec(binary, "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf"),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(500):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", ports["443"])
                writer.close()
                break
            assert proc.returncode is None, (conf_dir / "error.log").read_text()
            await asyncio.sleep(0.01)
        trust = ssl.create_default_context(cafile=str(cafile))
        yield Proxy(ports["443"], ports["80"], ports["5349"], trust)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def _https_get(proxy: Proxy, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tls_port, ssl=proxy.trust,
                                                   server_hostname=PUBLIC_HOST)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_room_socket_works_through_the_tls_proxy_and_metrics_do_not_pass(
        tmp_path: Path, redis_url: str, token: Callable[..., str]) -> None:
    await write_booking(redis_url, "b1")
    async with room_server(tmp_path, redis_url, public_base_url=f"https://{PUBLIC_HOST}") as server, \
            nginx_in_front_of(server, tmp_path) as proxy:
        status, body = await _https_get(proxy, "/healthz")
        assert status == 200 and b"alive" in body
        status, body = await _https_get(proxy, "/metrics")
        assert status == 404 and b"session_http_requests" not in body

        ws = await connect(f"wss://127.0.0.1:{proxy.tls_port}/v1/rooms/b1/ws", ssl=proxy.trust,
                           server_hostname=PUBLIC_HOST, origin=f"https://{PUBLIC_HOST}",  # type: ignore[arg-type]
                           subprotocols=["session.v1", "bearer." + token("client", CLIENT)],  # type: ignore[list-item]
                           open_timeout=5, compression=None)
        peer = Peer(ws)
        try:
            await peer.send({"type": "join", "v": 1})
            joined = await peer.expect("joined")
            assert joined["you"]["id"] == CLIENT
            await peer.send({"type": "chat.send", "id": "m1", "text": "through the proxy"})
            assert (await peer.expect("chat.ack"))["seq"] == 1
        finally:
            await peer.close()

        # port 80 sends everyone to HTTPS
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.http_port)
        writer.write(f"GET /room/b1 HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nConnection: close\r\n\r\n".encode())
        response = (await reader.read()).decode()
        writer.close()
        assert response.startswith("HTTP/1.1 301") and f"Location: https://{PUBLIC_HOST}/room/b1" in response


async def test_port_443_hands_the_turn_host_name_still_encrypted_to_the_turn_servers_tls_port(
        tmp_path: Path, redis_url: str) -> None:
    async with room_server(tmp_path, redis_url, public_base_url=f"https://{PUBLIC_HOST}") as server, \
            nginx_in_front_of(server, tmp_path) as proxy:
        # a stand-in for coturn's TLS listener: it terminates TLS itself, so the proxy must not have
        served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        served.load_cert_chain(tmp_path / "tls" / "fullchain.pem", tmp_path / "tls" / "privkey.pem")
        names: list[str | None] = []
        served.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,func-returns-value]

        async def turn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(json.dumps({"turn": True}).encode())
            await writer.drain()
            writer.close()

        listener = await asyncio.start_server(turn, "127.0.0.1", proxy.turn_port, ssl=served)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tls_port, ssl=proxy.trust,
                                                           server_hostname=TURN_HOST)
            assert json.loads(await reader.read()) == {"turn": True}
            writer.close()
            assert names == [TURN_HOST]  # the TLS handshake reached the TURN server itself
        finally:
            listener.close()
            await listener.wait_closed()
