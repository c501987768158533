"""A receiver process: the hub's OTLP gRPC receiver on a core of its own.

The hub starts ``--receivers N`` of these (``python -m tallyhub.collector_processor.receive.process``)
beside its own gRPC server; all listen on the same port (``SO_REUSEPORT``: the kernel spreads the
clients' connections over them). Each authenticates and checks exports as the hub's own receiver
does — the same ``Receiver`` — and has the hub's process queue them (``receiver_link``): an export
is acknowledged only once it is on disk in the hub's queue, as always. Python runs one thread at a
time per process: receiving (gRPC, checks) in other processes leaves the hub's process to convert
and insert.

It ends when the hub's process goes away (its stdin closes) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path

from tallyhub.collector_processor.receive.auth import KeyRing
from tallyhub.collector_processor.receive.link import QueueLink
from tallyhub.collector_processor.receive.receiver import Receiver, start_grpc_server
from tallyhub.collector_processor.stats import Stats
from tallyhub.collector_processor.tls import Tls

logger = logging.getLogger("tallyhub.receiver")

STATS_INTERVAL_S = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--link", required=True, help="the hub's Unix socket")
    parser.add_argument("--grpc-address", required=True, help="host:port, the hub's (already bound there)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--max-connection-age-s", type=float, default=0.0, help="see start_grpc_server")
    parser.add_argument("--tls-cert-file", type=Path, default=None)
    parser.add_argument("--tls-key-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    link = QueueLink(args.link)
    stats = Stats()
    keyring = KeyRing(link.keys)
    keyring.start()
    receiver = Receiver(keyring, link, stats, request_log_quota=link.request_log_quota)
    age_s = args.max_connection_age_s
    tls = Tls.from_files(args.tls_cert_file, args.tls_key_file)
    server, _ = start_grpc_server(receiver, args.grpc_address, shared=True, max_connection_age_s=age_s, tls=tls)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def until_the_hub_goes() -> None:
        sys.stdin.buffer.read()  # EOF: the hub closed our stdin, or its process is gone
        stop.set()

    threading.Thread(target=until_the_hub_goes, daemon=True).start()
    print("ready", flush=True)
    while not stop.wait(STATS_INTERVAL_S):
        try:
            link.send_stats(stats)
        except OSError:  # the hub's process is gone: so are we
            break
    server.stop(grace=5).wait()
    keyring.stop()
    with contextlib.suppress(OSError):
        link.send_stats(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
