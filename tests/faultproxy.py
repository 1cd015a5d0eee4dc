"""A TCP proxy on 127.0.0.1 that can damage what a server sends, for wire-fault tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from harness import free_port


class FaultProxy:
    """Relays every connection to `target_port`; `damage(request_head, offset, data)` may
    rewrite each server-to-client chunk. `request_head` is the start of the latest request
    on the connection (keep-alive connections carry several), `offset` the bytes relayed
    back on that connection so far."""

    def __init__(self, target_port: int, damage: Callable[[bytes, int, bytes], bytes]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._target_port = target_port
        self._damage = damage
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self._target_port))
        except OSError:
            client.close()
            return
        head = bytearray()

        def upstream() -> None:
            try:
                while data := client.recv(65536):
                    if data[:8].split(b" ")[0] in (b"GET", b"POST", b"PUT", b"DELETE"):
                        head[:] = data[:256]
                    server.sendall(data)
            except OSError:
                pass
            finally:
                server.close()

        threading.Thread(target=upstream, daemon=True).start()
        offset = 0
        try:
            while data := server.recv(65536):
                sent = self._damage(bytes(head), offset, data)
                client.sendall(sent)
                offset += len(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()
