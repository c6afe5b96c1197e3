"""Receivers: the message bodies (pure) and their delivery over HTTP or SMTP.

Every body is built from one ``Notification``. Errors never carry a receiver's
URL path, key or password: messages name the receiver and the HTTP status only.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Any, Optional

import aiohttp

from alerts.config import Receiver
from alerts.engine import Notification

PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}
ICON = {"firing": ":rotating_light:", "repeat": ":rotating_light:", "resolved": ":white_check_mark:"}
PERMANENT = (400, 413, 422)  # the receiver rejects this payload: retrying cannot help


class DeliveryError(Exception):
    """A failed delivery; ``permanent`` when retrying cannot succeed."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_of(n: Notification) -> str:
    """``firing`` (also for a repeat) or ``resolved``."""
    return "resolved" if n.kind == "resolved" else "firing"


def generic_body(n: Notification) -> dict[str, Any]:
    """The generic webhook body (also what the alerts topic carries); see docs/alerts.md."""
    return {
        "version": "1",
        "source": "ccmon",
        "status": status_of(n),
        "kind": n.kind,
        "key": n.key,
        "rule": n.rule,
        "queue": n.queue,
        "severity": n.severity,
        "summary": n.summary,
        "description": n.description,
        "runbook_url": n.runbook_url,
        "value": n.value,
        "threshold": n.threshold,
        "started_at": iso(n.started_ms),
        "at": iso(n.at_ms),
        "duration_seconds": n.duration_s,
    }


def slack_body(n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: plain text for notifications, blocks for the channel."""
    state = "RESOLVED" if n.kind == "resolved" else f"{n.severity.upper()}"
    text = f"{ICON[n.kind]} [{state}] {n.summary}"
    fields = [{"type": "mrkdwn", "text": f"*Queue*\n{n.queue or '-'}"},
              {"type": "mrkdwn", "text": f"*Rule*\n{n.rule}"}]
    if n.value is not None:
        fields.append({"type": "mrkdwn", "text": f"*Value*\n{n.value:g}"})
    if n.duration_s is not None:
        fields.append({"type": "mrkdwn", "text": f"*Lasted*\n{int(n.duration_s)} s"})
    context = [{"type": "mrkdwn", "text": f"ccmon · since {iso(n.started_ms)}"}]
    if n.runbook_url:
        context.append({"type": "mrkdwn", "text": f"<{n.runbook_url}|Runbook>"})
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n{n.description}"}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": context},
        ],
    }


def pagerduty_body(n: Notification, routing_key: str) -> dict[str, Any]:
    """PagerDuty Events API v2: trigger (also on repeat, deduplicated) or resolve, keyed by a stable dedup_key."""
    if n.kind == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": n.key}
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.key,
        "payload": {
            "summary": n.summary[:1024],
            "source": "ccmon",
            "severity": PD_SEVERITY.get(n.severity, "warning"),
            "timestamp": iso(n.started_ms),
            "component": n.queue or "ccmon",
            "group": n.rule,
            "class": "contact-center",
            "custom_details": {"description": n.description, "value": n.value, "threshold": n.threshold},
        },
    }
    if n.runbook_url:
        body["links"] = [{"href": n.runbook_url, "text": "Runbook"}]
    return body


def alertmanager_body(n: Notification) -> list[dict[str, Any]]:
    """Alertmanager's ``POST /api/v2/alerts``: resolved ends now; firing lasts until ccmon resolves it."""
    if n.kind == "resolved":
        ends = n.at_ms
    else:
        # ccmon sends no keep-alive (only firing, repeat and resolve), so the alert must outlive a long
        # incident in Alertmanager: twice the repeat interval, or a week without one. The resolve ends it.
        ends = n.at_ms + int((2 * n.repeat_s if n.repeat_s else 7 * 86400) * 1000)
    labels = {"alertname": n.rule, "severity": n.severity, "source": "ccmon"}
    if n.queue:
        labels["queue"] = n.queue
    return [{
        "labels": labels,
        "annotations": {"summary": n.summary, "description": n.description, "runbook_url": n.runbook_url},
        "startsAt": iso(n.started_ms),
        "endsAt": iso(ends),
    }]


def email_message(n: Notification, r: Receiver) -> EmailMessage:
    """A plain-text email."""
    msg = EmailMessage()
    msg["Subject"] = f"[{status_of(n).upper()}] {n.summary}"
    msg["From"] = r.sender
    msg["To"] = ", ".join(r.to)
    lines = [n.description, "", f"Rule: {n.rule}", f"Queue: {n.queue or '-'}", f"Severity: {n.severity}",
             f"Since: {iso(n.started_ms)}"]
    if n.duration_s is not None:
        lines.append(f"Lasted: {int(n.duration_s)} s")
    if n.runbook_url:
        lines.append(f"Runbook: {n.runbook_url}")
    msg.set_content("\n".join(lines) + "\n")
    return msg


class Notifier:
    """Sends notifications to receivers over one shared HTTP session."""

    def __init__(self) -> None:
        self._session: Optional[aiohttp.ClientSession] = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def send(self, r: Receiver, n: Notification) -> None:
        """Deliver one notification; raise DeliveryError on failure."""
        if r.type == "smtp":
            await asyncio.to_thread(self._smtp, r, n)
            return
        headers = {"User-Agent": "ccmon"}
        url = r.url
        if r.type == "webhook":
            body: Any = generic_body(n)
            if r.bearer_token:
                headers["Authorization"] = f"Bearer {r.bearer_token}"
        elif r.type == "slack":
            body = slack_body(n)
        elif r.type == "pagerduty":
            body = pagerduty_body(n, r.routing_key)
        else:
            body = alertmanager_body(n)
            url = url.rstrip("/") + "/api/v2/alerts"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(url, json=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=r.timeout_s)) as resp:
                if resp.status >= 300:
                    raise DeliveryError(f"receiver {r.name} ({r.type}) answered HTTP {resp.status}",
                                        permanent=resp.status in PERMANENT)
        except DeliveryError:
            raise
        except asyncio.TimeoutError:
            raise DeliveryError(f"receiver {r.name} ({r.type}) did not answer within {r.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"receiver {r.name} ({r.type}) is unreachable: {type(exc).__name__}") from None

    @staticmethod
    def _smtp(r: Receiver, n: Notification) -> None:
        try:
            with smtplib.SMTP(r.host, r.port, timeout=r.timeout_s) as smtp:
                if r.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if r.username:
                    smtp.login(r.username, r.password)
                smtp.send_message(email_message(n, r))
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError(f"receiver {r.name} (smtp): every recipient was refused", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"receiver {r.name} (smtp) failed: {type(exc).__name__}") from None
