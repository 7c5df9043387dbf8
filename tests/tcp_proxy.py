"""A TCP port in front of a real server (PostgreSQL, Redis) that a test can cut and restore.

Cut, it behaves as a stopped server seen from the service: open connections
drop and new ones are refused. Restored, the same port reaches the same server.
Told to hold new connections, it accepts them and never answers, as a server
whose packets are dropped does; the connections already open still work.
"""

import socket
import threading

from scripts.processes import free_port


class TCPProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._holding = False
        self._held: list[socket.socket] = []

    def start(self) -> "TCPProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener:
            _close(listener)  # shutdown() first: close() alone leaves accept() blocked
        for connection in connections:
            _close(connection)

    restore = start
    stop = cut

    def hold_new(self) -> None:
        """Accept new connections and send nothing either way on them."""
        self._holding = True

    def release_held(self) -> None:
        """Forward new connections again, and drop the ones held."""
        with self._lock:
            self._holding = False
            held, self._held = self._held, []
        for connection in held:
            _close(connection)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            with self._lock:
                if self._holding:
                    self._held.append(client)
                    continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(server)
                    return
                self._connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
