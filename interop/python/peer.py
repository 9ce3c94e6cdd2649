"""PyJWT as an interop peer of tokengate (driven by scripts/interop).

    peer.py verify-remote JWKS_URL ALG ISS AUD TOKEN
        Verifies TOKEN with the key PyJWKClient fetches from JWKS_URL, as a
        resource server would: only ALG allowed, iss, aud, exp, iat and sub
        required, header typ must be at+jwt (RFC 9068; PyJWT does not check
        typ itself, so it is read from the verified header).
    peer.py sign ALG KEY_FILE KID ISS AUD SUB
        Signs an access token with the private PEM (asymmetric ALG) or the
        secret oct JWK (HS*) in KEY_FILE and prints it.

Outcome of verify-remote: exit 0 and "ok", or exit 1 and "rejected: <why>";
anything else (exit 2) is a broken harness, never a verdict.
"""

import json
import sys
import time

import jwt
from jwt import PyJWK, PyJWKClient


def verify_remote(jwks_url, alg, iss, aud, token):
    client = PyJWKClient(jwks_url, cache_keys=False)
    try:
        signing_key = client.get_signing_key_from_jwt(token)
        decoded = jwt.decode_complete(
            token,
            signing_key.key,
            algorithms=[alg],
            issuer=iss,
            audience=aud,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWKClientConnectionError:
        # The JWKS could not be fetched: the harness is broken, not the token.
        raise
    except jwt.InvalidTokenError as error:
        print(f"rejected: {type(error).__name__}: {error}")
        return 1
    # As docs/INTEGRATION.md compares it (RFC 7515: case-insensitive, the
    # "application/" prefix optional).
    typ = decoded["header"].get("typ", "")
    if typ.lower() not in ("at+jwt", "application/at+jwt"):
        print(f"rejected: typ {typ!r} is not at+jwt")
        return 1
    print("ok")
    return 0


def sign(alg, key_file, kid, iss, aud, sub):
    with open(key_file, encoding="utf-8") as f:
        text = f.read()
    if alg.startswith("HS"):
        key = PyJWK(json.loads(text), algorithm=alg).key
    else:
        key = text
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + 300}
    print(jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"}))
    return 0


def main(argv):
    if len(argv) == 6 and argv[0] == "verify-remote":
        return verify_remote(*argv[1:])
    if len(argv) == 7 and argv[0] == "sign":
        return sign(*argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as error:  # a broken harness: never counted as a rejection
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(2)
