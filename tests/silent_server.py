"""A TCP server on loopback that accepts connections and never answers: a hung endpoint.

A real socket, not a mock: clients connect, send their request and wait for an answer that
never comes, exactly as with a server whose process is stuck. Used for an S3 endpoint and a
Pushgateway that hang.
"""

from __future__ import annotations

import socket
import threading


class SilentServer:
    """Listens on ``url`` (``http://127.0.0.1:PORT``), accepts, reads and never replies."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._held: list[socket.socket] = []  # kept open, so clients wait for their timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._held.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for connection in self._held:
            connection.close()
        self._listener.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
