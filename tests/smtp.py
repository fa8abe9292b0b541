"""A real SMTP server for tests (aiosmtpd on loopback) that can refuse or stall mail on demand."""

from __future__ import annotations

import asyncio
import email
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class MailSink:
    """Keeps every message it accepted; `refuse` answers 550, `stall` holds DATA until released."""

    refuse: bool = False
    stall: bool = False
    received: list[Message] = field(default_factory=list)
    attempts: int = 0
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        if self.refuse:
            return "550 5.7.1 Mailbox unavailable"
        if self.stall:
            self.stall = False
            self.stalled.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
            return "451 4.3.0 Aborted"
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        message["X-Received-At"] = repr(time.monotonic())
        self.received.append(message)
        return "250 OK"

    def subjects(self) -> list[str]:
        return [message["Subject"] for message in self.received]


class SMTPServer:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink
        self.port = free_port()
        self.controller = Controller(sink, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.release.set()
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
