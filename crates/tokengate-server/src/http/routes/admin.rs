//! `/admin/*`: user administration and the audit log, for callers whose
//! current roles include `admin` (the [`Admin`] extractor).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::http::error::ApiError;
use crate::http::extract::{Admin, ApiJson, ApiPath, ApiQuery};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;
use crate::service::{Actor, NewAccount};
use crate::store::{AuditQuery, AuditRow, User};

/// An audit row as the admin API shows it (the storage row is not a
/// response type).
fn audit_json(row: &AuditRow) -> Value {
    json!({
        "id": row.id, "at": row.at, "type": row.kind, "user_id": row.user_id,
        "session_id": row.session_id, "ip": row.ip, "detail": row.detail,
    })
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "email": u.email, "roles": u.roles.as_slice(),
        "disabled": u.disabled, "created_at": u.created_at,
    })
}

#[derive(Deserialize)]
pub struct UserListQuery {
    email: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/users?email=&after=&limit=`.
pub async fn admin_list_users(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<UserListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let users = state
        .store
        .list_users(
            q.email.as_deref().filter(|s| !s.is_empty()),
            q.after.as_deref(),
            limit,
        )
        .await?;
    let next = if users.len() as i64 == limit {
        users.last().map(|u| u.email.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "users": users.iter().map(user_json).collect::<Vec<_>>(),
        "next_after": next,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct NewUser {
    email: String,
    password: Zeroizing<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// `POST /admin/users`.
pub async fn admin_create_user(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    admin: Admin,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let roles = body.roles.unwrap_or_else(|| vec!["user".to_owned()]);
    let account = NewAccount::parse(&body.email, &body.password, &roles)?;
    let actor = Actor::Admin {
        id: admin.id,
        ip: client,
    };
    let user = state.accounts.create(account, &actor).await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    disabled: Option<bool>,
}

/// `PATCH /admin/users/{id}` {roles?, disabled?}.
pub async fn admin_update_user(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Response, ApiError> {
    let actor = Actor::Admin {
        id: admin.id,
        ip: client,
    };
    let (user, _) = state
        .accounts
        .update(&id, body.roles.as_deref(), body.disabled, &actor)
        .await?;
    Ok(Json(user_json(&user)).into_response())
}

/// `POST /admin/users/{id}/revoke-sessions`.
pub async fn admin_revoke_sessions(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let actor = Actor::Admin {
        id: admin.id,
        ip: client,
    };
    let ended = state.accounts.end_all_sessions(&id, &actor).await?;
    Ok(Json(json!({ "sessions_ended": ended })).into_response())
}

#[derive(Deserialize)]
pub struct AuditParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    user: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /admin/audit?type=&user=&before=&limit=`: newest first, by cursor.
pub async fn admin_audit(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = state
        .store
        .audit_page(&AuditQuery {
            kind: q.kind.filter(|s| !s.is_empty()),
            user_id: q.user.filter(|s| !s.is_empty()),
            before: q.before,
            limit,
        })
        .await?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    let events: Vec<Value> = rows.iter().map(audit_json).collect();
    Ok(Json(json!({ "events": events, "next_before": next })).into_response())
}
