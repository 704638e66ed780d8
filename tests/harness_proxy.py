"""A TCP proxy a test can cut: put it between a service and PostgreSQL (or any
server) to make the server unreachable without stopping it. The server may
listen on TCP or on a unix socket (the embedded PostgreSQL does); the proxy
always listens on TCP.

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()            # listens on 127.0.0.1:proxy.port
    await proxy.cut()              # drops every connection, refuses new ones
    await proxy.restore()          # listens again on the same port
    await proxy.close()
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1",
                 port: int = 0, target_socket: str | None = None) -> None:
        self.target = (target_host, target_port)
        self.target_socket = target_socket
        self.host = host
        self.port = port
        self.connections_made = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # Bumped by every cut: a connection still being set up when the proxy
        # is cut must not come through alive afterwards.
        self._generation = 0

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        socket_dir = dict(parse_qsl(parts.query)).get("host", "")
        if socket_dir.startswith("/"):  # libpq's unix-socket form: ?host=<directory>
            port = parts.port or 5432
            return cls("", port, target_socket=f"{socket_dir}/.s.PGSQL.{port}")
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url_through(self, url: str) -> str:
        """`url` (postgresql://user:pw@host:port/db) with host:port replaced by the
        proxy's (and a unix-socket `host=` parameter dropped)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.host}:{self.port}",
                                         query=query))

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening (connection refused) and reset every open connection."""
        server, self._server = self._server, None
        self._generation += 1
        if server is not None:
            server.close()  # stops listening now
        for writer in list(self._writers):
            writer.transport.abort()  # RST, as a dead network path or a crashed server would look
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.connections_made += 1
        if not self.up:  # accepted just before a cut, handled just after it
            client_w.transport.abort()
            return
        generation = self._generation
        self._writers.add(client_w)
        try:
            if self.target_socket:
                server_r, server_w = await asyncio.open_unix_connection(self.target_socket)
            else:
                server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            self._writers.discard(client_w)
            return
        if generation != self._generation:  # cut while connecting
            client_w.transport.abort()
            server_w.transport.abort()
            self._writers.discard(client_w)
            return
        self._writers.add(server_w)
        pipes = [asyncio.create_task(self._pipe(client_r, server_w)),
                 asyncio.create_task(self._pipe(server_r, client_w))]
        self._pipes.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._pipes.difference_update(pipes)
            self._writers.difference_update((client_w, server_w))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()  # pass the end on to the other side
