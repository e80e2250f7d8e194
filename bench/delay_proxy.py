"""A TCP proxy on loopback that can answer slowly: while the file --delay-file holds a number of seconds above 0,
each chunk from a client waits that long before it goes on (a slow service, as its caller sees it).

bench/stack.py runs it as a process of its own in front of the retrieve function, so that its forwarding never
waits on the threads of the process that drives the load (a test run's, or the bench's own). Thread per
connection: the bench's rates are tens per second. It runs until it is terminated.

    python bench/delay_proxy.py --port 20100 --target 20003 --delay-file /tmp/delay
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import threading
import time
from pathlib import Path


def delay(path: Path) -> float:
    """The delay the file asks for now; 0 when it is missing or not a number."""
    try:
        return max(0.0, float(path.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0.0


def pipe(client: socket.socket, target: int, delay_file: Path) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    with client, upstream, contextlib.suppress(OSError):  # either side may reset: the connection just ends
        while True:
            ready, _, _ = select.select([client, upstream], [], [])
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is client and (seconds := delay(delay_file)) > 0:
                    time.sleep(seconds)
                (upstream if sock is client else client).sendall(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--delay-file", type=Path, required=True)
    args = parser.parse_args()
    server = socket.create_server(("127.0.0.1", args.port))
    while True:
        client, _ = server.accept()
        threading.Thread(target=pipe, args=(client, args.target, args.delay_file), daemon=True).start()


if __name__ == "__main__":
    main()
