"""Realistic sample demand: the demo feed, what-if files for ``simulate``, benchmark load.

Deterministic for a seed. The mix covers all twelve languages, every region and all three
sources (a tenth through partners), with a preferred window on about a quarter of requests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

# (requester language, tenant country, weight): weights roughly follow FastTrack demand.
_MARKETS: tuple[tuple[str, str, int], ...] = (
    ("en-US", "US", 18), ("en-GB", "GB", 6), ("en-AU", "AU", 4), ("en-IN", "IN", 5),
    ("es-MX", "MX", 4), ("es-ES", "ES", 3), ("pt-BR", "BR", 5), ("fr-FR", "FR", 5),
    ("fr-CA", "CA", 2), ("de-DE", "DE", 6), ("de-CH", "CH", 1), ("it-IT", "IT", 3),
    ("ja-JP", "JP", 6), ("ko-KR", "KR", 3), ("zh-TW", "TW", 4), ("zh-HK", "HK", 1),
    ("zh-CN", "CN", 4), ("zh-SG", "SG", 1), ("th-TH", "TH", 2), ("vi-VN", "VN", 2),
    ("nl-NL", "NL", 2), ("ar-AE", "AE", 1),
)
_TOPICS = ("core_onboarding", "service_onboarding", "data_migration", "user_adoption")
_SERVICES = ("Exchange Online", "SharePoint Online", "OneDrive", "Microsoft Teams",
             "Microsoft Intune", "Microsoft Entra ID", "Microsoft 365 Apps")
_TENANTS = ("Contoso", "Fabrikam", "Northwind Traders", "Tailspin Toys", "Wide World Importers",
            "Adventure Works", "Litware", "Proseware", "Woodgrove Bank", "Alpine Ski House")


def sample_requests(count: int, start: datetime, *, per_hour: float = 120.0, seed: int = 7,
                    prefix: str = "sample") -> Iterator[dict[str, Any]]:
    """``count`` HelpRequest v1 dicts submitted from ``start`` at about ``per_hour`` an hour."""
    rng = random.Random(seed)
    languages, countries, weights = zip(*_MARKETS, strict=True)
    at = start
    for n in range(count):
        at += timedelta(seconds=rng.expovariate(per_hour / 3600))
        pick = rng.choices(range(len(languages)), weights=weights)[0]
        tenant = rng.choice(_TENANTS)
        request: dict[str, Any] = {
            "request_id": f"{prefix}-{n:07d}",
            "submitted_at": at.isoformat(timespec="seconds"),
            "source": rng.choices(("admin_center", "fasttrack_site", "partner"), (5, 4, 1))[0],
            "tenant": {"id": f"tenant-{countries[pick].lower()}-{rng.randrange(5000)}",
                       "name": f"{tenant} {countries[pick]}", "country": countries[pick]},
            "requester": {"name": f"Requester {n}", "language": languages[pick],
                          "email": f"it-admin{n}@{tenant.split()[0].lower()}.example.com"},
            "topic": rng.choice(_TOPICS),
            "services": rng.sample(_SERVICES, rng.randint(1, 3)),
        }
        if request["source"] == "partner":
            request["partner"] = {"id": "partner-0042", "name": "Fabrikam Partners",
                                  "email": "fasttrack-desk@fabrikam-partners.example.com"}
        if rng.random() < 0.25:
            earliest = at + timedelta(days=rng.randint(1, 5))
            request["preferred_window"] = {
                "earliest": earliest.isoformat(timespec="seconds"),
                "latest": (earliest + timedelta(days=rng.randint(2, 7))).isoformat(
                    timespec="seconds"),
            }
        yield request
