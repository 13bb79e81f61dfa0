"""A strict reference echo server (Python `websockets`) for checking the conformance suite's expectations.

Usage: scripts/.venv/bin/python scripts/interop/referee_echo_server.py
It prints `ringws listening on IP:PORT` like the real server, so the suite can target it with
RINGWS_CONFORMANCE_ADDR=IP:PORT. It is a referee for test expectations, never the system under test.
"""

import asyncio

from websockets.asyncio.server import serve


async def echo(connection):
    async for message in connection:
        await connection.send(message)


async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=None, max_queue=None, compression=None,
                     ping_interval=None) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"ringws listening on {host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
