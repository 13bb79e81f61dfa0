"""A reference server (Python `websockets`) with ringws's command line, for checking test expectations.

    scripts/.venv/bin/python scripts/interop/referee_server.py serve --bind 127.0.0.1 --port 0 --mode echo

Like ringws it prints `ringws listening on IP:PORT` on stdout, serves web/demo.html at `GET /` without
an upgrade (web/ringws.js at `GET /ringws.js`), and speaks `--mode echo` or `--mode broadcast`. It is a referee for the conformance suite's
and the interop scripts' expectations (RINGWS_CONFORMANCE_ADDR, RINGWS_INTEROP_SERVER), never the
system under test.
"""

import argparse
import asyncio
import http
import pathlib

from websockets.asyncio.server import broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

DEMO_PAGE = pathlib.Path(__file__).resolve().parents[2] / "web" / "demo.html"
CLIENT_LIBRARY = pathlib.Path(__file__).resolve().parents[2] / "web" / "ringws.js"


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    return parser.parse_args()


def serve_page(connection, request):
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    if request.path.split("?")[0] == "/ringws.js":
        body, content_type = CLIENT_LIBRARY.read_bytes(), "application/javascript; charset=utf-8"
    else:
        body, content_type = DEMO_PAGE.read_bytes(), "text/html; charset=utf-8"
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(http.HTTPStatus.OK, "OK", headers, body)


async def main():
    args = parse_args()
    clients = set()

    async def handler(connection):
        clients.add(connection)
        try:
            async for message in connection:
                if args.mode == "echo":
                    await connection.send(message)
                else:
                    broadcast(clients, message)
        finally:
            clients.discard(connection)

    async with serve(handler, args.bind, args.port, max_size=None, max_queue=None, compression=None,
                     ping_interval=None, process_request=serve_page) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"ringws listening on {host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
