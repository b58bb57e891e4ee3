"""Who is calling: the API key that ``Authorization: Bearer <key>`` names, found in the key ring.

The gateway's routes and the lifecycle routes depend on `Caller`, which looks the key up in the
ring of the app serving the request (``app.state.api_keys``, set by ``create_gateway``). The ops
API, which also reads its key from a cookie and wants an ops key, shares `known_key`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api_keys import ApiKey, ApiKeyRing

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A key from FASTTRACK_API_KEYS: `Authorization: Bearer <key>`")
# Module-level aliases: FastAPI resolves postponed annotations in the module's globals only.
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def known_key(keys: ApiKeyRing, presented: str | None, *, hint: str = "") -> ApiKey:
    """The key ``presented`` in ``keys``; else 401, its message ending in ``hint``."""
    found = keys.lookup(presented) if presented else None
    if found is None:
        raise HTTPException(401, "missing or unknown API key: send Authorization: Bearer <key>"
                                 + hint, headers={"WWW-Authenticate": "Bearer"})
    return found


def caller(request: Request, credentials: BearerCredentials) -> ApiKey:
    """The calling key, from the bearer token and the key ring of the app serving ``request``."""
    keys: ApiKeyRing = request.app.state.api_keys
    return known_key(keys, credentials.credentials if credentials else None)


Caller = Annotated[ApiKey, Depends(caller)]
