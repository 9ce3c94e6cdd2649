// Baseline for docs/BENCHMARKS.md: the protected route as the Express seed
// builds it (express + jsonwebtoken, HS256 secret from the environment),
// with the claims checks tokengate also makes (algorithm, issuer, audience).
const express = require('express');
const jwt = require('jsonwebtoken');

const secret = process.env.JWT_SECRET;
const options = {
  algorithms: ['HS256'],
  issuer: process.env.JWT_ISSUER,
  audience: process.env.JWT_AUDIENCE,
};

function authenticateToken(req, res, next) {
  const header = req.headers['authorization'];
  const token = header && header.split(' ')[1];
  if (!token) return res.sendStatus(401);
  jwt.verify(token, secret, options, (err, user) => {
    if (err) return res.sendStatus(401);
    req.user = user;
    next();
  });
}

const app = express();
app.get('/protected', authenticateToken, (req, res) => {
  res.json({ id: req.user.sub, roles: req.user.roles, session_id: req.user.sid });
});
app.listen(Number(process.env.PORT), '127.0.0.1');
