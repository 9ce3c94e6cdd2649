"""The seeds' Python protected route, written by us after seed 002's
`token_required` decorator (Flask + PyJWT), for bench/run.sh; run under
gunicorn. Environment: JWT_ISSUER, JWT_AUDIENCE and either JWT_SECRET
(HS256) or JWT_JWK (a public JWK, to verify tokengate's tokens with the same
key)."""

import json
import os
from functools import wraps

import jwt
from flask import Flask, jsonify, request

app = Flask(__name__)

ISSUER = os.environ["JWT_ISSUER"]
AUDIENCE = os.environ["JWT_AUDIENCE"]
if os.environ.get("JWT_JWK"):
    _jwk = json.loads(os.environ["JWT_JWK"])
    KEY = jwt.PyJWK(_jwk).key
    ALGORITHMS = [_jwk["alg"]]
else:
    KEY = os.environ["JWT_SECRET"]
    ALGORITHMS = ["HS256"]


def token_required(f):
    @wraps(f)
    def decorated(*args, **kwargs):
        auth_header = request.headers.get("Authorization", "")
        parts = auth_header.split(" ")
        if len(parts) != 2 or not parts[1]:
            return jsonify({"error": "Token is missing"}), 401
        try:
            data = jwt.decode(
                parts[1],
                KEY,
                algorithms=ALGORITHMS,
                issuer=ISSUER,
                audience=AUDIENCE,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidTokenError:
            return jsonify({"error": "Token is invalid"}), 401
        return f(data, *args, **kwargs)

    return decorated


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@app.get("/api/protected")
@token_required
def protected(claims):
    return jsonify({"message": "Access granted", "user": claims.get("sub")})
