"""SMTP delivery (iMIP, RFC 6047): the invite's email, as built, to every ``To`` recipient.

Sent with aiosmtplib, one connection per invite. The envelope sender is the ``From`` address,
the center mailbox that is the invite's ORGANIZER.

Idempotency. SMTP cannot deliver exactly once: a connection lost after the server took the
message but before it said so makes a retry deliver it again. A resend is harmless to the
recipient's calendar: it carries the same UID and SEQUENCE, which calendar clients dedupe on,
and the same Message-ID (``build_imip_message`` derives it from UID, SEQUENCE and METHOD), which
mail systems may dedupe on. Resends after a recorded success are the pipeline's to prevent: it
sends only while the request is still ``booked`` and records every delivery in the invite log.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage, Message
from typing import Any, Literal

import aiosmtplib

from scheduler.delivery import DeliveryFailed, DeliveryReceipt, Invite, parsed_email
from scheduler.delivery_settings import (
    BackendSettings,
    DeliverySettingsInvalid,
    parse_settings,
    secret_from,
)

StartTls = bool | Literal["auto"]


class SmtpSettings(BackendSettings):
    """A center's ``delivery`` entry for ``backend: smtp``."""

    host: str
    port: int | None = None
    starttls: StartTls = "auto"
    tls: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout: float = 30.0
    ca_file: str | None = None


class SmtpDelivery:
    """Sends each invite's iMIP email through one SMTP server (submission or relay)."""

    name = "smtp"
    tells_removed_attendees = False

    def __init__(self, host: str, port: int | None = None, *, starttls: StartTls = "auto",
                 use_tls: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 30.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        """``starttls``: True requires the upgrade, False never upgrades, "auto" upgrades when
        the server offers it. ``use_tls``: TLS from the first byte (port 465); excludes STARTTLS.
        ``tls_context``: whom to trust (default: the system's CAs)."""
        if use_tls and starttls is True:
            raise ValueError("use_tls and starttls=True exclude each other")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.host = host
        self.port = port or (465 if use_tls else 587 if starttls is True else 25)
        self.starttls: StartTls = False if use_tls else starttls
        self.use_tls = use_tls
        self.username = username
        self.password = password
        self.timeout = timeout
        self.tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any],
                      env: Mapping[str, str] | None = None) -> SmtpDelivery:
        """Build from a center's ``delivery`` settings (keys as in :class:`SmtpSettings`);
        ``password_env`` names the variable in ``env`` that holds the password."""
        parsed = parse_settings(SmtpSettings, settings, cls.name)
        password = secret_from(env or {}, parsed.password_env, cls.name, "password_env")
        context = ssl.create_default_context(cafile=parsed.ca_file) if parsed.ca_file else None
        try:
            return cls(parsed.host, parsed.port, starttls=parsed.starttls, use_tls=parsed.tls,
                       username=parsed.username, password=password, timeout=parsed.timeout,
                       tls_context=context)
        except ValueError as exc:
            raise DeliverySettingsInvalid(f"{cls.name}: delivery: {exc}") from None

    @property
    def location(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def send(self, invite: Invite) -> DeliveryReceipt:
        """Send ``invite.email`` to its ``To`` recipients; the receipt's id is its Message-ID.

        Raises DeliveryFailed: transient for refused connections, timeouts and 4xx replies,
        permanent for 5xx replies (rejections, failed authentication) and missing features.
        Any recipient refused makes the whole delivery fail, after the others got it.
        """
        return self.send_email(invite.email)

    def send_email(self, message: Message) -> DeliveryReceipt:
        """Send any email (an invite's, a reminder) to its ``To`` recipients, as :meth:`send`
        does; the receipt's id is its Message-ID."""
        sender, recipients = _envelope(parsed_email(message))
        try:
            refused, _ = asyncio.run(self._send(message, sender, recipients))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise self._refused({r.recipient: r.code for r in exc.recipients}) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryFailed(self.name, f"{self.location} replied {exc.code} {exc.message}",
                                 transient=_is_transient(exc.code)) from exc
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryFailed(self.name, f"{self.location}: {exc}", transient=False) from exc
        except OSError as exc:  # refused, timed out, disconnected (aiosmtplib's are OSErrors)
            raise DeliveryFailed(self.name, f"{self.location} unreachable: {exc}",
                                 transient=True) from exc
        except aiosmtplib.SMTPException as exc:  # the server lacks STARTTLS, AUTH, SMTPUTF8...
            raise DeliveryFailed(self.name, f"{self.location}: {exc}", transient=False) from exc
        if refused:
            raise self._refused({address: reply.code for address, reply in refused.items()})
        return DeliveryReceipt(location=self.location, external_id=str(message["Message-ID"]))

    async def _send(self, message: Message, sender: str, recipients: Sequence[str],
                    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        return await aiosmtplib.send(
            message, sender=sender, recipients=recipients, hostname=self.host, port=self.port,
            use_tls=self.use_tls, start_tls=None if self.starttls == "auto" else self.starttls,
            tls_context=self.tls_context, username=self.username, password=self.password,
            timeout=self.timeout)

    def _refused(self, codes: Mapping[str, int]) -> DeliveryFailed:
        listed = ", ".join(f"{address} ({code})" for address, code in sorted(codes.items()))
        return DeliveryFailed(self.name, f"{self.location} refused {listed}",
                              transient=all(_is_transient(code) for code in codes.values()))


def _envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """(envelope sender, recipients) from the From and To headers."""
    senders = _addresses(message.get_all("From", []))
    if len(senders) != 1:
        raise DeliveryFailed("smtp", f"the invite email needs one From address, has {senders}",
                             transient=False)
    recipients = _addresses(message.get_all("To", []))
    if not recipients:
        raise DeliveryFailed("smtp", "the invite email has no To address", transient=False)
    return senders[0], recipients


def _addresses(headers: Iterable[Any]) -> list[str]:
    return [address.addr_spec for header in headers for address in header.addresses]


def _is_transient(code: int) -> bool:
    """RFC 5321 §4.2.1: 4yz is a transient negative reply, 5yz a permanent one."""
    return 400 <= code < 500
