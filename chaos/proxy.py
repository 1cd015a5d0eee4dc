"""A TCP relay on 127.0.0.1 standing for one network link between two nodes, which a
scenario can cut (a partition) and mend."""

from __future__ import annotations

import contextlib
import socket
import threading

from kvstore.cli.launcher import free_port

RELAY_CHUNK_BYTES = 65536


class LinkProxy:
    """Relays every connection to `target_port`. `cut()` drops the live connections and
    resets new ones until `mend()`: both ends see the link fail at once, as after a
    partition that a TCP keepalive has noticed."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, name=f"link-{self.port}", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            live, self._live = self._live, set()
        for sock in live:
            _close(sock)

    def mend(self) -> None:
        self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                _close(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self._target_port), timeout=5)
            server.settimeout(None)
        except OSError:
            _close(client)
            return
        with self._lock:
            if self._cut:
                _close(client)
                _close(server)
                return
            self._live |= {client, server}
        threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
        self._pump(server, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(RELAY_CHUNK_BYTES):
                sink.sendall(data)
        except OSError:
            pass  # the other direction failed, or the link was cut
        finally:
            for sock in (source, sink):
                _close(sock)
            with self._lock:
                self._live -= {source, sink}


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
