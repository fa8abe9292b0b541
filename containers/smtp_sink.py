#!/usr/bin/python3
"""An SMTP sink with the part of Mailpit's interface the stack uses (standard library and aiosmtpd).

    /mailpit          # SMTP on :1025, the inbox over HTTP on :8025 (installed as /mailpit in the image)
    /mailpit readyz   # exit 0 when the sink answers (the container's health check)

GET /api/v1/messages lists what arrived, newest first, in Mailpit's JSON shape (ID, From, To,
Subject, Snippet, Created); GET /readyz answers 200. Messages are kept in memory, the last 1,000.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
import uuid
from collections import deque
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from aiosmtpd.controller import Controller

SMTP_PORT = 1025
HTTP_PORT = 8025
MESSAGES: deque[dict[str, Any]] = deque(maxlen=1000)
LOCK = threading.Lock()


def _addresses(value: str | None) -> list[dict[str, str]]:
    return [{"Name": name, "Address": address} for name, address in getaddresses([value or ""]) if address]


def _snippet(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    return " ".join(str(text).split())[:250]


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        # policy.default makes EmailMessage objects (get_body and friends).
        message = cast(EmailMessage, message_from_bytes(envelope.content, policy=policy.default))
        entry = {
            "ID": uuid.uuid4().hex,
            "From": (_addresses(message["From"]) or [{"Name": "", "Address": envelope.mail_from}])[0],
            "To": _addresses(message["To"]) or [{"Name": "", "Address": rcpt} for rcpt in envelope.rcpt_tos],
            "Subject": str(message["Subject"] or ""),
            "Snippet": _snippet(message),
            "Created": datetime.now(UTC).isoformat(),
        }
        with LOCK:
            MESSAGES.appendleft(entry)
        return "250 Message accepted for delivery"


class Inbox(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/readyz":
            self._send(200, {"status": "ok"})
        elif self.path.split("?", 1)[0] == "/api/v1/messages":
            with LOCK:
                messages = list(MESSAGES)
            self._send(200, {"total": len(messages), "count": len(messages), "messages": messages})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str]) -> int:
    if argv[1:] == ["readyz"]:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/readyz", timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    controller = Controller(Sink(), hostname="0.0.0.0", port=SMTP_PORT)  # noqa: S104 - a container's service
    controller.start()
    print(f"SMTP on :{SMTP_PORT}, inbox on :{HTTP_PORT}", flush=True)
    server = ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), Inbox)  # noqa: S104 - a container's service
    try:
        server.serve_forever()
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
