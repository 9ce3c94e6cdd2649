// Node peers of tokengate (driven by scripts/interop), run from
// target/interop/node where `npm ci` installed the pinned packages.
//
//   node peer.mjs verify-jose JWKS_URL ALG ISS AUD TOKEN
//       jose's jwtVerify with createRemoteJWKSet: only ALG, iss, aud, typ
//       at+jwt, exp/iat/sub required.
//   node peer.mjs verify-jsonwebtoken JWKS_URL ALG ISS AUD TOKEN
//       jwks-rsa fetches the key named by the header's kid; jsonwebtoken
//       verifies with only ALG, iss and aud; typ is read from the verified
//       header (jsonwebtoken does not check it).
//   node peer.mjs sign-jose ALG OUT_DIR ISS AUD SUB
//       jose generates its own key for ALG, writes what a verifier needs to
//       OUT_DIR (jwks.json: the public JWK; for HS*: secret.jwk.json, the
//       oct JWK) and prints an access token signed with it.
//
// Outcome of the verify commands: exit 0 and "ok"; exit 1 and
// "rejected: <why>"; exit 3 and "unsupported: <why>" when the library has
// no implementation of ALG. Exit 2 is a broken harness, never a verdict.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as jose from 'jose';
import jsonwebtoken from 'jsonwebtoken';
import jwksRsa from 'jwks-rsa';

async function verifyJose(jwksUrl, alg, iss, aud, token) {
  const keys = jose.createRemoteJWKSet(new URL(jwksUrl));
  try {
    await jose.jwtVerify(token, keys, {
      algorithms: [alg],
      issuer: iss,
      audience: aud,
      typ: 'at+jwt',
      requiredClaims: ['exp', 'iat', 'sub'],
    });
  } catch (error) {
    // A JWKS that cannot be fetched or read is the harness's fault.
    if (error instanceof jose.errors.JWKSTimeout || error instanceof jose.errors.JWKSInvalid) {
      throw error;
    }
    if (error instanceof jose.errors.JOSENotSupported) {
      console.log(`unsupported: ${error.code}: ${error.message}`);
      return 3;
    }
    if (error instanceof jose.errors.JOSEError) {
      console.log(`rejected: ${error.code}: ${error.message}`);
      return 1;
    }
    throw error;
  }
  console.log('ok');
  return 0;
}

async function verifyJsonwebtoken(jwksUrl, alg, iss, aud, token) {
  const decoded = jsonwebtoken.decode(token, { complete: true });
  if (decoded === null) {
    console.log('rejected: not a JWT');
    return 1;
  }
  const client = jwksRsa({ jwksUri: jwksUrl, cache: false, rateLimit: false });
  // A key jwks-rsa cannot import is skipped, so the kid is then "not found".
  let publicKey;
  try {
    publicKey = (await client.getSigningKey(decoded.header.kid)).getPublicKey();
  } catch (error) {
    if (error.name === 'SigningKeyNotFoundError') {
      console.log(`unsupported: jwks-rsa: ${error.message}`);
      return 3;
    }
    throw error;
  }
  let verified;
  try {
    verified = jsonwebtoken.verify(token, publicKey, {
      algorithms: [alg],
      issuer: iss,
      audience: aud,
      complete: true,
    });
  } catch (error) {
    // jsonwebtoken's words for an algorithm or key type it has no code for.
    if (/is not a valid algorithm|Unknown key type/.test(error.message)) {
      console.log(`unsupported: ${error.name}: ${error.message}`);
      return 3;
    }
    if (error instanceof jsonwebtoken.JsonWebTokenError) {
      console.log(`rejected: ${error.name}: ${error.message}`);
      return 1;
    }
    throw error;
  }
  for (const claim of ['exp', 'iat', 'sub']) {
    if (!(claim in verified.payload)) {
      console.log(`rejected: no ${claim}`);
      return 1;
    }
  }
  // As docs/INTEGRATION.md compares it (RFC 7515: case-insensitive, the
  // "application/" prefix optional).
  const typ = String(verified.header.typ ?? '').toLowerCase();
  if (typ !== 'at+jwt' && typ !== 'application/at+jwt') {
    console.log(`rejected: typ ${JSON.stringify(verified.header.typ)} is not at+jwt`);
    return 1;
  }
  console.log('ok');
  return 0;
}

async function signJose(alg, outDir, iss, aud, sub) {
  let signingKey;
  let jwk;
  if (alg.startsWith('HS')) {
    signingKey = await jose.generateSecret(alg, { extractable: true });
    jwk = await jose.exportJWK(signingKey);
  } else {
    const pair = await jose.generateKeyPair(alg, { extractable: true });
    signingKey = pair.privateKey;
    jwk = await jose.exportJWK(pair.publicKey);
  }
  const kid = await jose.calculateJwkThumbprint(jwk);
  Object.assign(jwk, { kid, alg, use: 'sig' });
  if (alg.startsWith('HS')) {
    writeFileSync(join(outDir, 'secret.jwk.json'), JSON.stringify(jwk), { mode: 0o600 });
  } else {
    writeFileSync(join(outDir, 'jwks.json'), JSON.stringify({ keys: [jwk] }));
  }
  const token = await new jose.SignJWT({ sub })
    .setProtectedHeader({ alg, kid, typ: 'at+jwt' })
    .setIssuer(iss)
    .setAudience(aud)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(signingKey);
  console.log(token);
  return 0;
}

const commands = {
  'verify-jose': [verifyJose, 5],
  'verify-jsonwebtoken': [verifyJsonwebtoken, 5],
  'sign-jose': [signJose, 5],
};

const [command, ...args] = process.argv.slice(2);
const entry = commands[command];
if (entry === undefined || args.length !== entry[1]) {
  console.error('usage: see the comment at the top of peer.mjs');
  process.exit(2);
}
try {
  process.exitCode = await entry[0](...args);
} catch (error) {
  console.error(`error: ${error.name}: ${error.message}`);
  process.exitCode = 2;
}
