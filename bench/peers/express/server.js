// The seeds' Node stack, written by us after their design (seed 002's
// login, authenticateToken middleware and refresh endpoint; seed 000's
// "store the refresh token, invalidate it when used, issue a new one"), for
// bench/run.sh. One process, as Node runs. Not for production: users and
// refresh tokens live in memory.
//
// Environment: PORT; JWT_ISSUER, JWT_AUDIENCE; the access-token key either
// JWT_SECRET (HS256) or JWT_JWK (a public JWK: ES256/EdDSA/RS256, to verify
// tokengate's own tokens with the same key); REFRESH_SECRET; RATE_LIMIT
// (requests per window on the auth routes, as the seeds add).
const crypto = require('node:crypto');
const express = require('express');
const helmet = require('helmet');
const { rateLimit } = require('express-rate-limit');
const jwt = require('jsonwebtoken');
const bcrypt = require('bcryptjs');

const ISSUER = process.env.JWT_ISSUER;
const AUDIENCE = process.env.JWT_AUDIENCE;
const ACCESS_SECRET = process.env.JWT_SECRET || crypto.randomBytes(32).toString('hex');
const REFRESH_SECRET = process.env.REFRESH_SECRET || crypto.randomBytes(32).toString('hex');
let verifyKey = ACCESS_SECRET;
let verifyAlgorithms = ['HS256'];
if (process.env.JWT_JWK) {
  const jwk = JSON.parse(process.env.JWT_JWK);
  verifyKey = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  verifyAlgorithms = [jwk.alg];
}

// One user, bcrypt cost 10 as the seeds hash.
const users = new Map();
const BENCH_EMAIL = process.env.BENCH_EMAIL || 'bench@example.com';
const BENCH_PASSWORD = process.env.BENCH_PASSWORD || 'load testing is a long sentence too';
users.set(BENCH_EMAIL, { id: 'user-1', email: BENCH_EMAIL, role: 'user', passwordHash: bcrypt.hashSync(BENCH_PASSWORD, 10) });
const refreshTokens = new Set();

function issue(user) {
  const accessToken = jwt.sign({ userId: user.id, email: user.email, role: user.role }, ACCESS_SECRET, {
    expiresIn: '15m', issuer: ISSUER, audience: AUDIENCE,
  });
  const refreshToken = jwt.sign({ userId: user.id }, REFRESH_SECRET, { expiresIn: '7d', jwtid: crypto.randomUUID() });
  refreshTokens.add(refreshToken);
  return { accessToken, refreshToken, expiresIn: '15m' };
}

function authenticateToken(req, res, next) {
  const authHeader = req.headers['authorization'];
  const token = authHeader && authHeader.split(' ')[1];
  if (!token) return res.status(401).json({ error: 'Access token required' });
  try {
    req.user = jwt.verify(token, verifyKey, { algorithms: verifyAlgorithms, issuer: ISSUER, audience: AUDIENCE });
    next();
  } catch (error) {
    return res.status(401).json({ error: 'Invalid token' });
  }
}

const app = express();
app.use(helmet());
app.use(express.json());
const authLimiter = rateLimit({ windowMs: 15 * 60 * 1000, limit: Number(process.env.RATE_LIMIT || 100), standardHeaders: 'draft-7', legacyHeaders: false });

app.get('/healthz', (req, res) => res.json({ status: 'ok' }));

app.post('/api/login', authLimiter, async (req, res) => {
  try {
    const { email, password } = req.body;
    const user = users.get(email);
    if (!user || !(await bcrypt.compare(password, user.passwordHash))) {
      return res.status(401).json({ error: 'Invalid credentials' });
    }
    res.json(issue(user));
  } catch (error) {
    res.status(500).json({ error: 'Internal server error' });
  }
});

app.get('/api/protected', authenticateToken, (req, res) => {
  res.json({ message: 'Access granted', user: req.user.sub || req.user.userId });
});

// Rotation as seed 000 describes it: the presented token must be stored,
// is invalidated, and a new pair is issued.
app.post('/api/refresh', authLimiter, (req, res) => {
  const { refreshToken } = req.body;
  if (!refreshToken) return res.status(401).json({ error: 'Refresh token required' });
  try {
    const decoded = jwt.verify(refreshToken, REFRESH_SECRET);
    if (!refreshTokens.delete(refreshToken)) return res.status(403).json({ error: 'Invalid refresh token' });
    const user = [...users.values()].find((u) => u.id === decoded.userId);
    if (!user) return res.status(403).json({ error: 'Invalid refresh token' });
    res.json(issue(user));
  } catch (error) {
    res.status(403).json({ error: 'Invalid refresh token' });
  }
});

app.listen(Number(process.env.PORT), '127.0.0.1');
