"""A real SMTP server on 127.0.0.1 (aiosmtpd) and its inbox: what an operator's mailbox would receive."""
from __future__ import annotations

import email
import re
import threading
import time
from dataclasses import dataclass
from email import policy

from aiosmtpd.controller import Controller

from jobflow.db import free_port
from tests.support.waiting import wait_until

KINDS = {"Alert": "opened", "Still open": "reminder", "Resolved": "resolved"}
# The words of each rule's title (the subject's part before " - "), most specific first.
RULE_WORDS = (("provider", "provider"), ("failures", "failure"), ("queue", "queue"), ("coverage", "coverage"),
              ("workers", "worker"), ("capture", "capture"))
SUBJECT = re.compile(r"^\[JobFlow Similar\] (Alert|Still open|Resolved): (.*?)(?: - (.*))?$")


@dataclass
class Mail:
    """One email the SMTP server accepted, when, and what it is about."""
    at: float            # time.monotonic() when it arrived
    subject: str
    message: email.message.EmailMessage
    recipients: list[str]

    @property
    def kind(self) -> str | None:
        match = SUBJECT.match(self.subject)
        return KINDS[match.group(1)] if match else None

    @property
    def rule(self) -> str | None:
        match = SUBJECT.match(self.subject)
        title = match.group(2).lower() if match else ""
        return next((rule for rule, word in RULE_WORDS if word in title), None)

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        return body.get_content() if body is not None else ""


class Inbox:
    """The mailbox behind an SMTP server on 127.0.0.1; ``stop`` and ``start`` again keep the port."""

    def __init__(self):
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller: Controller | None = None

    def start(self) -> Inbox:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        subject = " ".join(str(message["Subject"] or "").split())
        with self._lock:
            self.mails.append(Mail(time.monotonic(), subject, message, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        with self._lock:
            return [m.message for m in self.mails]

    @property
    def recipients(self) -> list[list[str]]:
        with self._lock:
            return [m.recipients for m in self.mails]

    def about(self, rule: str, kind: str | None = None) -> list[Mail]:
        with self._lock:
            return [m for m in self.mails if m.rule == rule and (kind is None or m.kind == kind)]

    def subjects(self) -> list[str]:
        with self._lock:
            return [m.subject for m in self.mails]

    def wait_for(self, rule: str, kind: str, timeout: float = 90, processes=(), count: int = 1) -> list[Mail]:
        """Wait until ``count`` emails of ``kind`` about ``rule`` arrived; them."""
        return wait_until(f"{count} {kind} email(s) about the {rule} alert",
                          lambda: len(self.about(rule, kind)) >= count and self.about(rule, kind),
                          timeout, processes=processes, seen=self.subjects)
