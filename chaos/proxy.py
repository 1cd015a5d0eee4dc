"""A TCP relay on 127.0.0.1 standing for one network link between two nodes, which a
scenario can cut (a partition) and mend, and whose server-to-client bytes a test can damage."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from .launcher import free_port

RELAY_CHUNK_BYTES = 65536
REQUEST_HEAD_BYTES = 256
_METHODS = (b"GET", b"POST", b"PUT", b"DELETE")

# damage(request_head, offset, data) -> data: may rewrite a server-to-client chunk. `request_head`
# starts the latest request on the connection (keep-alive carries several), `offset` counts the
# bytes relayed back on that connection so far.
Damage = Callable[[bytes, int, bytes], bytes]


class LinkProxy:
    """Relays every connection to `target_port`. `cut()` drops the live connections and
    resets new ones until `mend()`: both ends see the link fail at once, as after a
    partition that a TCP keepalive has noticed."""

    def __init__(self, target_port: int, damage: Damage | None = None) -> None:
        self.port = free_port()
        self._damage = damage
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
        head = bytearray()
        threading.Thread(target=self._pump, args=(client, server, head, False), daemon=True).start()
        self._pump(server, client, head, True)

    def _pump(self, source: socket.socket, sink: socket.socket, head: bytearray, to_client: bool) -> None:
        offset = 0
        try:
            while data := source.recv(RELAY_CHUNK_BYTES):
                if not to_client and data[:8].split(b" ")[0] in _METHODS:
                    head[:] = data[:REQUEST_HEAD_BYTES]
                sent = self._damage(bytes(head), offset, data) if to_client and self._damage else data
                sink.sendall(sent)
                offset += len(data)
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
