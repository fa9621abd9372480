"""moto's DynamoDB in a process of its own, for a stack whose functions are busy.

In one process, every DynamoDB request the functions make is answered by moto on a thread that
shares the interpreter lock with the functions, the pollers and the HTTP API: on two cores, a
migrate worker waited longer for that lock than moto took to answer. Here moto answers from its
own interpreter, as DynamoDB answers from its own machines. The same patches as in-process
apply (``moto_locks``, ``moto_memory``, ``moto_dispatch``), and a second port answers the
benchmark's census of the table (``infra.bench.census``), read inside moto as before.

``python -m infra.local.moto_process`` prints ``<moto port> <census port>`` when both listen,
and exits when its standard input closes (its parent stopped or died).
"""

from __future__ import annotations

import http.server
import json
import logging
import sys
import threading
import warnings
from typing import Any
from urllib.parse import parse_qs, urlparse


class _CensusHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        from infra.bench.census import take_census

        table = parse_qs(urlparse(self.path).query).get("table", [""])[0]
        census = take_census(table)
        body = json.dumps({"badges": dict(census.badges), "learners": census.learners}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    from moto.server import ThreadedMotoServer

    from infra.local.moto_dispatch import list_moto_modules_once
    from infra.local.moto_locks import query_by_key, serialise_dynamodb
    from infra.local.moto_memory import forget_model_instances

    for name in ("moto", "werkzeug"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Tried to parse", category=UserWarning)
    serialise_dynamodb()
    query_by_key()
    list_moto_modules_once()
    forget_model_instances()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    census = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CensusHandler)
    census.daemon_threads = True
    threading.Thread(target=census.serve_forever, name="census", daemon=True).start()
    print(server.get_host_and_port()[1], census.server_address[1], flush=True)
    sys.stdin.read()  # returns when the parent closes the pipe or dies
    census.shutdown()
    server.stop()


if __name__ == "__main__":
    main()
