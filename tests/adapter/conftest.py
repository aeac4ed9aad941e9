"""Fixtures of the adapter tests: a profile factory and a real local HTTP legacy server."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from unified_segmentation.adapter.profile import CompatProfile

TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def make_profile():
    """``make_profile(player_id, primary, baseline, anomalies, served_by, confidence)`` → CompatProfile.

    ``anomalies`` is ``{axis: bool}`` (``is_anomalous`` = any) or ``None``.
    """

    def _make(player_id="p1", primary=None, baseline=None, anomalies=None, served_by="legacy",
              confidence=1.0, is_anomalous=None):
        primary = {"monetization": "whale", "engagement": "regular"} if primary is None else primary
        baseline = {"spend_per_day": 3.0, "sessions_per_day": 2.0} if baseline is None else baseline
        anom = None
        if anomalies is not None:
            flag = any(anomalies.values()) if is_anomalous is None else is_anomalous
            anom = {"is_anomalous": flag, "axes": anomalies}
        return CompatProfile.model_validate({
            "player_id": player_id, "primary_segments": primary,
            "segment_scores": {ax: {name: 1.0} for ax, name in primary.items()},
            "behavioral_baseline": baseline, "confidence": confidence, "timestamp": TS,
            "anomalies": anom, "served_by": served_by,
        })

    return _make


def ok_body(player_id: str) -> dict:
    return {
        "player_id": player_id,
        "primary_segments": {"monetization": "whale", "engagement": "hardcore"},
        "segment_scores": {"monetization": {"whale": 0.9, "dolphin": 0.1}, "engagement": {"hardcore": 1}},
        "behavioral_baseline": {"spend_per_day": 4.5, "sessions_per_day": 5},
        "confidence": 0.8,
        "timestamp": "2024-05-01T12:00:00Z",
        "anomalies": {"is_anomalous": False, "axes": {"monetization": False}},
        "studio_extra_field": "ignored",
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        q = parse_qs(urlsplit(self.path).query)
        self._answer(q.get("player_id", [""])[0], b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            player_id = json.loads(raw).get("player_id", "")
        except ValueError:
            player_id = ""
        self._answer(player_id, raw)

    def _send(self, status: int, body: bytes, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, player_id: str, raw: bytes):
        st = self.server.state
        with st["lock"]:
            st["hits"] += 1
            st["requests"].append({"method": self.command, "path": self.path, "body": raw})
            mode = st["mode"]
        try:
            if mode == "ok":
                self._send(200, json.dumps(ok_body(player_id)).encode())
            elif mode == "slow":
                time.sleep(st["sleep_s"])
                self._send(200, json.dumps(ok_body(player_id)).encode())
            elif mode == "500":
                self._send(500, b'{"error": "boom"}')
            elif mode == "404":
                self._send(404, b'{"error": "unknown player"}')
            elif mode == "garbage_json":
                body = ok_body(player_id)
                body.update({"confidence": "very high", "segment_scores": {"monetization": {"whale": 7}}})
                self._send(200, json.dumps(body).encode())
            elif mode == "not_json":
                self._send(200, b"<html>Internal error</html>", "text/html")
            elif mode == "json_list":
                self._send(200, b"[1, 2, 3]")
            elif mode == "wrong_player":
                self._send(200, json.dumps(ok_body("someone_else")).encode())
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): expected
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients hanging up (timeouts) are expected here
        pass


class LegacyServer:
    def __init__(self):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.state = {"lock": threading.Lock(), "hits": 0, "mode": "ok", "sleep_s": 1.0, "requests": []}
        self.httpd.state = self.state
        host, port = self.httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def hits(self) -> int:
        with self.state["lock"]:
            return self.state["hits"]

    def set_mode(self, mode: str) -> None:
        with self.state["lock"]:
            self.state["mode"] = mode

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=2)


@pytest.fixture
def legacy_server():
    srv = LegacyServer()
    yield srv
    srv.close()
