"""A TCP gate in front of a real server: open, it forwards bytes both ways; shut, it
refuses new connections and cuts the open ones. To take "the database" away from a
syncd process without stopping the PostgreSQL cluster the other tests share."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class TcpGate:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self._lock = threading.Lock()
        self._open_sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        probe = socket.create_server((host, 0))
        self.port: int = probe.getsockname()[1]
        probe.close()

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        """Listen on `port` (the same every time) and forward each connection."""
        with self._lock:
            if self._listener is not None:
                return
            self._listener = socket.create_server((self.host, self.port))
            listener = self._listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        """Connections refused from now on; open ones cut at once."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open_sockets = self._open_sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # shut
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # shut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open_sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def gate(target_port: int) -> Iterator[TcpGate]:
    """A gate to `target_port`, shut when the block ends."""
    tcp = TcpGate(target_port)
    try:
        yield tcp
    finally:
        tcp.shut()
