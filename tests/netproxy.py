"""A TCP relay for the multi-host test: each LISTEN address forwards to one TARGET.

    python tests/netproxy.py TARGET_HOST:PORT LISTEN_HOST:PORT [LISTEN_HOST:PORT ...]

The test's hosts (network namespaces) reach the machine's PostgreSQL, which
listens on loopback only, through their own address on a veth link. Cutting a
link then cuts that host off, as a network fault would. Prints `ready` once
every address listens.
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main() -> None:
    target_host, target_port = sys.argv[1].rsplit(":", 1)

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    servers = []
    for address in sys.argv[2:]:
        host, port = address.rsplit(":", 1)
        servers.append(await asyncio.start_server(relay, host, int(port)))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
