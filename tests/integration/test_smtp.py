"""The SMTP receiver talks to a real (minimal) SMTP server on loopback."""

from __future__ import annotations

import asyncio
import socketserver
import threading
from email import message_from_bytes
from typing import Any

import pytest

from alerts.config import Receiver
from alerts.engine import Notification
from ccmon.notify import DeliveryError, Notifier

pytestmark = pytest.mark.integration


class SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough RFC 5321 to accept one message (no TLS), recording the envelope and data."""

    def handle(self) -> None:
        server: Any = self.server
        self.wfile.write(b"220 test ESMTP\r\n")
        data = False
        lines: list[bytes] = []
        for raw in self.rfile:
            if data:
                if raw in (b".\r\n", b".\n"):
                    server.messages.append(b"".join(lines))
                    data = False
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(raw[1:] if raw.startswith(b"..") else raw)
                continue
            verb = raw[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 test\r\n")
            elif verb == b"MAIL":
                server.envelope.append(raw.strip().decode())
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"RCPT":
                ok = b"refused" not in raw
                server.envelope.append(raw.strip().decode())
                self.wfile.write(b"250 ok\r\n" if ok else b"550 no such user\r\n")
            elif verb == b"DATA":
                data, lines = True, []
                self.wfile.write(b"354 go\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_email_is_delivered_and_a_refused_recipient_is_permanent() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.messages, server.envelope = [], []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    note = Notification(kind="firing", rule="SL", queue="sales", severity="critical", summary="SL in sales is 0%",
                        description="Today's service level fell to 0.0%.", runbook_url="https://example.invalid/rb",
                        value=0.0, threshold=0.8, started_ms=1795400000000, at_ms=1795400000000)
    receiver = Receiver(name="mail", type="smtp", host="127.0.0.1", port=port, starttls=False,
                        sender="ccmon@example.com", to=("oncall@example.com",), timeout_s=5)
    notifier = Notifier()
    try:
        asyncio.run(notifier.send(receiver, note))
        (raw,) = server.messages  # type: ignore[attr-defined]
        msg = message_from_bytes(raw)
        assert msg["Subject"] == "[FIRING] SL in sales is 0%" and msg["To"] == "oncall@example.com"
        assert "Runbook: https://example.invalid/rb" in msg.get_payload()
        assert "rcpt TO:<oncall@example.com>" in server.envelope  # type: ignore[attr-defined]
        refused = Receiver(**{**receiver.__dict__, "to": ("refused@example.com",)})
        with pytest.raises(DeliveryError) as info:
            asyncio.run(notifier.send(refused, note))
        assert info.value.permanent
    finally:
        server.shutdown()
