"""Encrypted document upload and download throughput against plain streaming, on one server, one disk.

    .venv/bin/python benchmarks/documents.py [--size-mib 256] [--rounds 3]

It starts one server process on 127.0.0.1 (with its embedded Redis under a temporary directory) that
serves both the real documents API and a baseline that streams the same bytes unencrypted to and from
the same directory with the same write path (temp file, fsync, rename). Rounds alternate encrypted and
plain; the ratios are medians of the per-round ratios. The last line is one JSON object: upload_ratio and download_ratio
(encrypted over plain), upload_mb_s and download_mb_s (encrypted), and the plain figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PIECE = 1024 * 1024


# --- the server side: the real app plus the plain baseline -------------------------------------------


def _baseline_feature() -> object:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import BaseRoute, Route

    from files import format as fmt
    from files.blobs import BlobStore
    from session_server.auth import authenticate
    from session_server.context import AppContext

    read_block = 8 * (fmt.CHUNK_SIZE + fmt.TAG_BYTES)  # the documents download reads the same amount

    class PlainBaseline:
        name = "bench-plain"

        def __init__(self) -> None:
            self.store: BlobStore | None = None

        def routes(self) -> list[BaseRoute]:
            return [Route("/bench/plain", self.upload, methods=["POST"]),
                    Route("/bench/plain/{blob_id}", self.download, methods=["GET"])]

        async def start(self, ctx: AppContext) -> None:
            self.store = BlobStore(ctx.settings.data_dir / "documents")
            await self.store.ensure()

        async def stop(self, ctx: AppContext) -> None:
            return None

        async def upload(self, request: Request) -> Response:
            authenticate(request)
            assert self.store is not None
            blob_id = "plain-" + uuid.uuid4().hex
            size = 0
            async with self.store.create(blob_id) as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    await out.write(chunk)
            return JSONResponse({"id": blob_id, "size": size}, status_code=201)

        async def download(self, request: Request) -> Response:
            authenticate(request)
            assert self.store is not None
            path = self.store.path(request.path_params["blob_id"])
            size = path.stat().st_size
            body = BlobStore.read_range(path, 0, size, read_block)
            return StreamingResponse(body, media_type="application/octet-stream",
                                     headers={"Content-Length": str(size)})

    return PlainBaseline()


def serve(port: int) -> None:
    import uvicorn

    from session_server.app import create_app
    from session_server.documents import DocumentsFeature
    from session_server.local_secrets import with_local_secrets
    from session_server.settings import load_settings

    settings, _ = with_local_secrets(load_settings(os.environ))
    app = create_app(settings, features=[DocumentsFeature(), _baseline_feature()])  # type: ignore[list-item]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


# --- the driver ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _body(size: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    first = True
    while sent < size:
        piece = block[:min(PIECE, size - sent)]
        if first:
            piece = b"%PDF-1.7\n" + piece[9:]
            first = False
        sent += len(piece)
        yield piece


async def _measure(size: int, rounds: int, port: int, token: str) -> dict[str, list[float]]:
    import httpx

    block = os.urandom(PIECE)
    results: dict[str, list[float]] = {"enc_up": [], "enc_down": [], "plain_up": [], "plain_down": []}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
        async def up(url: str, extra: dict[str, str]) -> tuple[float, str]:
            t0 = time.perf_counter()
            r = await http.post(url, content=_body(size, block), headers={**headers, **extra})
            elapsed = time.perf_counter() - t0
            assert r.status_code == 201, r.text
            return elapsed, str(r.json()["id"])

        async def down(url: str) -> float:
            t0 = time.perf_counter()
            got = 0
            async with http.stream("GET", url, headers=headers) as r:
                assert r.status_code == 200
                async for part in r.aiter_raw(PIECE):
                    got += len(part)
            assert got == size
            return time.perf_counter() - t0

        # Warm-up of both paths (not measured).
        await up("/v1/documents", {"X-Filename": "warm.pdf"})
        await up("/bench/plain", {})
        for i in range(rounds):
            order = ("enc", "plain") if i % 2 == 0 else ("plain", "enc")
            for kind in order:
                if kind == "enc":
                    t, doc_id = await up("/v1/documents", {"X-Filename": "bench.pdf"})
                    results["enc_up"].append(size / t / 1e6)
                    results["enc_down"].append(size / await down(f"/v1/documents/{doc_id}/content") / 1e6)
                    await http.delete(f"/v1/documents/{doc_id}", headers=headers)
                else:
                    t, blob_id = await up("/bench/plain", {})
                    results["plain_up"].append(size / t / 1e6)
                    results["plain_down"].append(size / await down(f"/bench/plain/{blob_id}") / 1e6)
            print(f"round {i + 1}: encrypted up {results['enc_up'][-1]:.0f} MB/s down "
                  f"{results['enc_down'][-1]:.0f} MB/s | plain up {results['plain_up'][-1]:.0f} MB/s "
                  f"down {results['plain_down'][-1]:.0f} MB/s", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    from session_server.auth import Role, TokenAuthority

    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-documents-") as tmp:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVER_") and k != "REDIS_URL"}
        env.update({"SESSION_SERVER_DATA_DIR": str(Path(tmp) / "data"),
                    "SESSION_SERVER_DOCUMENT_MAX_BYTES": str(size + 1),
                    "SESSION_SERVER_LOG_LEVEL": "warning"})
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
        try:
            import httpx

            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the benchmark server did not start")
                time.sleep(0.1)
            secrets = json.loads((Path(tmp) / "data" / "local-secrets.json").read_text())
            authority = TokenAuthority({secrets["api_key_id"]: secrets["api_secret"]}, max_ttl_s=86400)
            token, _ = authority.mint(sub="bench-practitioner", name="bench", role=Role.PRACTITIONER,
                                      ttl_s=3600)
            print(f"documents benchmark: {args.size_mib} MiB per transfer, {args.rounds} rounds, "
                  f"one server on 127.0.0.1, {os.cpu_count()} cores", flush=True)
            r = asyncio.run(_measure(size, args.rounds, port, token))
        finally:
            server.terminate()
            server.wait(30)
    med = {k: statistics.median(v) for k, v in r.items()}
    # Each round measures both paths back to back, so a ratio per round cancels out load that other
    # processes put on the machine; the median of those ratios is the figure.
    up_ratios = [e / p for e, p in zip(r["enc_up"], r["plain_up"], strict=True)]
    down_ratios = [e / p for e, p in zip(r["enc_down"], r["plain_down"], strict=True)]
    summary = {
        "upload_ratio": round(statistics.median(up_ratios), 3),
        "download_ratio": round(statistics.median(down_ratios), 3),
        "upload_mb_s": round(med["enc_up"], 1),
        "download_mb_s": round(med["enc_down"], 1),
        "plain_upload_mb_s": round(med["plain_up"], 1),
        "plain_download_mb_s": round(med["plain_down"], 1),
        "size_mib": args.size_mib,
        "rounds": args.rounds,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
