//! The `protected_api` example's protected route, for `bench/run.sh`: the
//! same layer (`Guard` over a remote JWKS, `guard.require()`) and the same
//! handler, with the verified-token cache's size from `VERIFY_CACHE_SIZE`
//! (0 turns it off; default [`DEFAULT_CACHE_SIZE`]) so both can be
//! measured. `/` is the unauthenticated route of the same server.
//!
//! `TOKENGATE_ISSUER`, `TOKENGATE_AUDIENCE`, `PORT` as in `protected_api`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokengate::VerifyPolicy;
use tokengate::guard::{Auth, DEFAULT_CACHE_SIZE, Guard, RemoteJwks};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let issuer = env("TOKENGATE_ISSUER", "http://127.0.0.1:8080");
    let audience = env("TOKENGATE_AUDIENCE", "tokengate");
    let port = env("PORT", "3000");
    let cache: usize = env("VERIFY_CACHE_SIZE", &DEFAULT_CACHE_SIZE.to_string()).parse()?;

    let keys = RemoteJwks::builder(format!("{issuer}/.well-known/jwks.json")).build()?;
    keys.fetch_now().await?;
    let policy = VerifyPolicy::builder()
        .issuer(issuer.as_str())
        .audience(audience.as_str())
        .typ("at+jwt")
        .build()?;
    let guard = Guard::builder(keys, policy).cache(cache).build();
    let app = Router::new()
        .route("/api/protected", get(protected))
        .route_layer(guard.require())
        .route("/", get(|| async { "Anyone can read this." }));

    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn protected(Auth { claims, .. }: Auth) -> Json<Value> {
    Json(json!({ "message": "You are in.", "user": claims.sub, "email": claims.email }))
}
