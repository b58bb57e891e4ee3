"""Which FastTrack region (AMER, EMEA, APAC) a tenant's country belongs to.

The IANA zones of a country (pytz's country table) say its continent; the exceptions are the
Asian and ocean zones that Microsoft's regions count as EMEA (the Middle East, the Caucasus,
Central Asia, the African islands) and the Atlantic islands of the Americas.
"""

from __future__ import annotations

from functools import lru_cache

import pytz

from schemas.help_request import Region

_EMEA_OUTSIDE_EUROPE_AFRICA = frozenset({
    # Middle East
    "AE", "BH", "IL", "IQ", "IR", "JO", "KW", "LB", "OM", "PS", "QA", "SA", "SY", "YE", "CY",
    # Caucasus and Central Asia
    "AM", "AZ", "GE", "KZ", "KG", "TJ", "TM", "UZ",
    # African islands in the Indian Ocean, Atlantic islands off Europe and Africa
    "MU", "RE", "YT", "SC", "KM", "MG", "TF", "CV", "SH", "IS", "FO", "BV",
})
_AMER_ISLANDS = frozenset({"BM", "FK", "GS"})
_APAC_WITHOUT_ZONES = frozenset({"HM"})  # Heard and McDonald Islands: uninhabited, no zone
_BY_CONTINENT = {
    "America": Region.AMER,
    "Europe": Region.EMEA,
    "Africa": Region.EMEA,
    "Asia": Region.APAC,
    "Australia": Region.APAC,
    "Pacific": Region.APAC,
    "Indian": Region.APAC,
    "Antarctica": Region.APAC,
    "Atlantic": Region.EMEA,
    "Arctic": Region.EMEA,
}


@lru_cache(maxsize=512)
def region_of_country(country: str) -> Region:
    """The region of an ISO 3166-1 alpha-2 country; LookupError for a code pytz does not know."""
    if country in _EMEA_OUTSIDE_EUROPE_AFRICA:
        return Region.EMEA
    if country in _AMER_ISLANDS:
        return Region.AMER
    if country in _APAC_WITHOUT_ZONES:
        return Region.APAC
    zones = pytz.country_timezones.get(country)
    if not zones:
        raise LookupError(f"no time zones known for country {country!r}")
    return _BY_CONTINENT[zones[0].split("/", 1)[0]]
