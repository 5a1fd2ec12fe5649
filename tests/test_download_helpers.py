"""A local HTTP file server for the download/prepare tests (imported by tests/test_download*.py
and tests/test_prepare*.py as a pytest plugin-free helper).

Supports Range requests (206 + Content-Range), and per-file faults set by the test:
`drop_after` (send that many body bytes then close the connection, `times` times),
`truncate` (advertise the full length, stop at that absolute byte offset, every time), `corrupt` (flip a byte
in the middle), `status` (answer with this HTTP status, `status_times` times or always),
`ignore_range` (always 200 + full body).
"""
from __future__ import annotations

import http.server
import threading
from pathlib import Path


class FileServer:
    """Serve `directory` on 127.0.0.1 with injectable faults; `requests` logs (path, Range header)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.faults: dict[str, dict] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                fault = server.faults.get(name, {})
                path = server.directory / name
                if fault.get("status") and fault.get("status_times", 10**9) > 0:
                    fault["status_times"] = fault.get("status_times", 10**9) - 1
                    self.send_error(fault["status"])
                    return
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                if fault.get("corrupt"):
                    mid = len(data) // 2
                    data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
                start = 0
                if rng and not fault.get("ignore_range"):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                send = body
                if fault.get("truncate") is not None:
                    send = body[: max(0, fault["truncate"] - start)]  # the file stops at that absolute offset
                elif fault.get("drop_after") is not None and fault.get("times", 1) > 0:
                    fault["times"] = fault.get("times", 1) - 1
                    send = body[: fault["drop_after"]]
                self.wfile.write(send)
                self.wfile.flush()
                if len(send) < len(body):
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_sources(tmp: Path, data: dict) -> Path:
    """Write a sources dict to `tmp/sources.yaml` and return its path."""
    import yaml

    path = Path(tmp) / "sources.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


__all__ = ["FileServer", "write_sources"]
