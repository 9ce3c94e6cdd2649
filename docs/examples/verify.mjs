// Verifies a tokengate access token in Node with `jose` (npm install jose),
// knowing nothing but the service's JWKS URL. Run as a script it checks the
// token given as its argument: exit 0 and the claims as JSON, or exit 1 and
// the reason. tests/integration/forward_auth.rs runs it against a real
// tokengate.
//
// It cannot see tokengate's denylist: a logged-out token passes until its
// exp. Where that matters, use forward-auth or the Rust guard.
import { pathToFileURL } from 'node:url';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const base = process.env.TOKENGATE_URL ?? 'http://127.0.0.1:8080';
// tokengate's `issuer` and `audience` settings (defaults: public_url, "tokengate").
const issuer = process.env.TOKENGATE_ISSUER ?? base;
const audience = process.env.TOKENGATE_AUDIENCE ?? 'tokengate';

// Fetched on first use, cached, refetched when a token names an unknown kid
// (a rotation).
const jwks = createRemoteJWKSet(new URL('/.well-known/jwks.json', base));

export async function verifyAccessToken(token) {
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    typ: 'at+jwt', // an access token, not some other JWT from the same keys
    algorithms: ['ES256'], // the service's signing_alg, and nothing else
    requiredClaims: ['exp', 'iat', 'sub'],
    clockTolerance: 30, // seconds, as tokengate's leeway
  });
  return payload; // sub, sid, roles, scope, email, ...
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const claims = await verifyAccessToken(process.argv[2] ?? '');
    console.log(JSON.stringify(claims));
  } catch (error) {
    console.error(`rejected: ${error.code ?? error.name}: ${error.message}`);
    process.exit(1);
  }
}
