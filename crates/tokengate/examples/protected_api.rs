//! An API protected by tokengate: a public route, `/api/protected` for any
//! signed-in user, `/api/admin` for the role `admin`. It trusts the tokens
//! of a running `tokengate serve`, knowing nothing but its JWKS URL.
//!
//! ```text
//! tokengate serve                      # in one terminal (http://127.0.0.1:8080)
//! cargo run -p tokengate --features axum --example protected_api
//! curl -s localhost:3000/api/protected -H "Authorization: Bearer $ACCESS_TOKEN"
//! ```
//!
//! `TOKENGATE_ISSUER` (default `http://127.0.0.1:8080`), `TOKENGATE_AUDIENCE`
//! (default `tokengate`), `TOKENGATE_JWKS_URL` (default: the issuer's
//! `/.well-known/jwks.json`) and `PORT` (default 3000) point it elsewhere.
//! The server's integration tests run [`app`] against a real service.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokengate::VerifyPolicy;
use tokengate::guard::{Auth, Guard, RemoteJwks};

/// The API's router, verifying tokens with the keys at `jwks_url`.
pub async fn app(
    jwks_url: &str,
    issuer: &str,
    audience: &str,
) -> Result<Router, Box<dyn std::error::Error>> {
    let keys = RemoteJwks::builder(jwks_url).build()?;
    // Fail at start-up, not at the first request, if the issuer is away.
    keys.fetch_now().await?;
    let policy = VerifyPolicy::builder()
        .issuer(issuer)
        .audience(audience)
        .typ("at+jwt")
        .build()?;

    // The three lines: a guard, a layer on the routes, a role on one.
    let guard = Guard::builder(keys, policy).build();
    let api = Router::new()
        .route("/api/protected", get(protected))
        .route(
            "/api/admin",
            get(admin).route_layer(guard.require().role("admin")),
        )
        .route_layer(guard.require());

    Ok(Router::new().route("/", get(public)).merge(api))
}

async fn public() -> &'static str {
    "Anyone can read this."
}

async fn protected(Auth { claims, .. }: Auth) -> Json<Value> {
    Json(json!({ "message": "You are in.", "user": claims.sub, "email": claims.email }))
}

async fn admin(Auth { claims, .. }: Auth) -> Json<Value> {
    Json(json!({ "message": "Welcome to the admin area.", "user": claims.sub }))
}

#[allow(dead_code)] // The tests use `app` without `main`.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let issuer = env("TOKENGATE_ISSUER", "http://127.0.0.1:8080");
    let jwks_url = env(
        "TOKENGATE_JWKS_URL",
        &format!("{issuer}/.well-known/jwks.json"),
    );
    let audience = env("TOKENGATE_AUDIENCE", "tokengate");
    let port = env("PORT", "3000");

    let app = app(&jwks_url, &issuer, &audience).await?;
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("protected API on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
