"""Verifies a tokengate access token in Python with PyJWT
(pip install "pyjwt[crypto]"), knowing nothing but the service's JWKS URL.
Run as a script it checks the token given as its argument: exit 0 and the
claims as JSON, or exit 1 and the reason. tests/integration/forward_auth.rs
runs it against a real tokengate.

It cannot see tokengate's denylist: a logged-out token passes until its exp.
Where that matters, use forward-auth or the Rust guard.
"""

import json
import os
import sys

import jwt

BASE = os.environ.get("TOKENGATE_URL", "http://127.0.0.1:8080")
# tokengate's `issuer` and `audience` settings (defaults: public_url, "tokengate").
ISSUER = os.environ.get("TOKENGATE_ISSUER", BASE)
AUDIENCE = os.environ.get("TOKENGATE_AUDIENCE", "tokengate")

# Fetched on first use and cached; a token naming an unknown kid (a rotation)
# makes it fetch again.
JWKS = jwt.PyJWKClient(f"{BASE}/.well-known/jwks.json")


def verify_access_token(token: str) -> dict:
    # An access token, not some other JWT signed with the same keys.
    typ = jwt.get_unverified_header(token).get("typ", "")
    if typ.lower() not in ("at+jwt", "application/at+jwt"):
        raise jwt.InvalidTokenError(f"typ {typ!r} is not at+jwt")
    key = JWKS.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],  # the service's signing_alg, and nothing else
        audience=AUDIENCE,
        issuer=ISSUER,
        leeway=30,  # seconds, as tokengate's leeway
        options={"require": ["exp", "iat", "sub"]},
    )  # sub, sid, roles, scope, email, ...


if __name__ == "__main__":
    try:
        claims = verify_access_token(sys.argv[1] if len(sys.argv) > 1 else "")
    except jwt.PyJWTError as error:
        print(f"rejected: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(claims))
