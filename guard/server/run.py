"""Running the app under uvicorn: in the foreground (``guard serve``) or in a background thread
(tests, the demo). We bind the socket ourselves so that port 0 picks a free port we can report."""

from __future__ import annotations

import asyncio
import socket
import threading
import time


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives every thread that allocates its own malloc arena, and keeps what each one freed;
    with the judge's worker threads that cost 15-20 MB of RSS here (measured: 151 -> 136 MB ready,
    189 -> 168 MB after load). Must run before the threads start; a no-op off glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this on Linux: without it, a response written as headers then body
    # waits for the client's delayed ACK (a 40 ms stall per request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app, *, log_level: str = "warning", grace_s: float | None = None):
    """A uvicorn server that drains for ``grace_s`` (default: the app's ``shutdown_grace_s``) on
    SIGTERM and, shortly before the grace runs out, ends the streams still open with an error
    event and ``[DONE]`` rather than cutting them mid-event."""
    import uvicorn

    grace = grace_s if grace_s is not None else getattr(app, "shutdown_grace_s", 30.0)

    class GuardServer(uvicorn.Server):
        async def shutdown(self, sockets=None):
            drain = getattr(app, "drain", None)
            handle = None
            if drain is not None:
                cut_at = max(0.0, grace - 1.0) if grace >= 2.0 else grace / 2
                handle = asyncio.get_running_loop().call_later(cut_at, drain.cut)
            try:
                await super().shutdown(sockets)
            finally:
                if handle is not None:
                    handle.cancel()

    # uvloop and httptools when installed (they are dependencies): the lean path (docs/server.md).
    # log_config=None: uvicorn's records go to the root logger, which guard.logs.configure renders as JSON.
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", log_level=log_level,
                            timeout_graceful_shutdown=grace, backlog=2048)
    return GuardServer(config)


def run(coro):
    """Run the server's coroutine on uvloop when it is installed (the lean path), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"


class ServerThread:
    """``with ServerThread(app) as s: OpenAI(base_url=s.base_url)`` - a real server on loopback."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, grace_s: float | None = None):
        self.app, self.host, self.port, self.grace_s = app, host, port, grace_s
        self.server = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ServerThread:
        self.sock = bind(self.host, self.port)
        self.base_url = base_url(self.sock)
        self.server = uvicorn_server(self.app, grace_s=self.grace_s)
        self._thread = threading.Thread(target=lambda: run(self.server.serve(sockets=[self.sock])),
                                        name="guard-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("guard server failed to start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 15.0) -> None:
        """What SIGTERM does to ``guard serve``: stop accepting, drain, cut what is left, exit."""
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout=timeout + (self.grace_s if self.grace_s is not None else getattr(self.app, "shutdown_grace_s", 0)))
        self.sock.close()
        self._thread = None
