//! `/admin/*`: user administration and the audit log, for callers whose
//! current roles include `admin` (the [`Admin`] extractor).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use crate::http::error::ApiError;
use crate::http::extract::{Admin, ApiJson, ApiPath, ApiQuery};
use crate::http::openapi::{
    BadRequest, Conflict, Forbidden, InternalError, NotFound, PayloadTooLarge, ServiceUnavailable,
    Unauthorized, UnprocessableEntity, UnsupportedMediaType,
};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;
use crate::service::{Actor, NewAccount, activity};
use crate::store::{AuditQuery, AuditRow, User};

/// An audit event as the admin API shows it (the storage row is not a
/// response type).
#[derive(Serialize, ToSchema)]
pub struct AuditEventView<'a> {
    /// Cursor id, increasing.
    id: i64,
    /// Unix seconds.
    at: i64,
    /// The event kind (`login_failed`, `logout`, ...).
    #[serde(rename = "type")]
    kind: &'a str,
    /// The user concerned.
    user_id: Option<&'a str>,
    /// The session concerned.
    session_id: Option<&'a str>,
    /// The client address.
    ip: Option<&'a str>,
    /// The event's details; never a token, password or secret.
    #[schema(value_type = Object)]
    detail: &'a serde_json::Value,
}

impl<'a> From<&'a AuditRow> for AuditEventView<'a> {
    fn from(row: &'a AuditRow) -> Self {
        AuditEventView {
            id: row.id,
            at: row.at,
            kind: &row.kind,
            user_id: row.user_id.as_deref(),
            session_id: row.session_id.as_deref(),
            ip: row.ip.as_deref(),
            detail: &row.detail,
        }
    }
}

/// A user as the admin API shows it (never the password hash).
#[derive(Serialize, ToSchema)]
pub struct UserView<'a> {
    /// The user id (`sub`).
    id: &'a str,
    /// The normalised email.
    email: &'a str,
    /// The roles.
    roles: &'a [String],
    /// Whether the account is disabled.
    disabled: bool,
    /// Created, Unix seconds.
    created_at: i64,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(u: &'a User) -> Self {
        UserView {
            id: u.id.as_str(),
            email: &u.email,
            roles: u.roles.as_slice(),
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

/// One page of users, by email.
#[derive(Serialize, ToSchema)]
pub struct UserPage<'a> {
    users: Vec<UserView<'a>>,
    /// The `after` of the next page; null on the last.
    next_after: Option<&'a str>,
}

/// `?email=&after=&limit=` of `GET /admin/users`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Only this email (exact, after normalisation); empty for all.
    #[param(pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    email: Option<String>,
    /// The `next_after` of the previous page.
    #[param(pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    after: Option<String>,
    /// Page size, 1 to 500 (50 by default; out of range is clamped).
    limit: Option<i64>,
}

/// `GET /admin/users?email=&after=&limit=`.
#[utoipa::path(
    get,
    path = "/admin/users",
    tag = "admin",
    operation_id = "admin_list_users",
    security(("bearer" = [])),
    params(UserListQuery),
    responses(
        (status = 200, description = "Users by email, paged.", body = UserPage),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(Forbidden)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
    let next_after = if users.len() as i64 == limit {
        users.last().map(|u| u.email.as_str())
    } else {
        None
    };
    Ok(Json(UserPage {
        users: users.iter().map(UserView::from).collect(),
        next_after,
    })
    .into_response())
}

/// A role name as `Roles::parse` takes it: the items of `roles` in the
/// document (the bodies carry plain strings).
pub struct RoleName;

impl utoipa::PartialSchema for RoleName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9._:-]+$"))
            .min_length(Some(1))
            .max_length(Some(64))
            .into()
    }
}

impl ToSchema for RoleName {}

/// The body of `POST /admin/users`.
#[derive(Deserialize, ToSchema)]
pub struct NewUser {
    /// Trimmed and lower-cased before use.
    #[schema(example = "ada@example.com")]
    email: String,
    /// 12 to 128 characters, hard to guess.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    password: Zeroizing<String>,
    /// `["user"]` by default.
    #[serde(default)]
    #[schema(value_type = Option<Vec<RoleName>>, min_items = 1)]
    roles: Option<Vec<String>>,
}

/// `POST /admin/users`.
#[utoipa::path(
    post,
    path = "/admin/users",
    tag = "admin",
    operation_id = "admin_create_user",
    security(("bearer" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "The user is created.", body = UserView),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(Forbidden)),
        (status = 409, response = inline(Conflict)),
        (status = 413, response = inline(PayloadTooLarge)),
        (status = 415, response = inline(UnsupportedMediaType)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}

/// The body of `PATCH /admin/users/{id}`: what to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UserPatch {
    /// The new roles (all of them).
    #[serde(default)]
    #[schema(value_type = Option<Vec<RoleName>>, min_items = 1)]
    roles: Option<Vec<String>>,
    /// Disable (their live access tokens stop working at once) or enable.
    #[serde(default)]
    disabled: Option<bool>,
}

/// `PATCH /admin/users/{id}` {roles?, disabled?}.
#[utoipa::path(
    patch,
    path = "/admin/users/{id}",
    tag = "admin",
    operation_id = "admin_update_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user id; never a control character.", pattern = "^[^\\x00-\\x1F\\x7F]*$")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "The user as changed.", body = UserView),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(Forbidden)),
        (status = 404, response = inline(NotFound)),
        (status = 413, response = inline(PayloadTooLarge)),
        (status = 415, response = inline(UnsupportedMediaType)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
    Ok(Json(UserView::from(&user)).into_response())
}

/// How many sessions a revocation ended.
#[derive(Serialize, ToSchema)]
pub struct SessionsEnded {
    sessions_ended: usize,
}

/// `POST /admin/users/{id}/revoke-sessions`.
#[utoipa::path(
    post,
    path = "/admin/users/{id}/revoke-sessions",
    tag = "admin",
    operation_id = "admin_revoke_sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user id; never a control character.", pattern = "^[^\\x00-\\x1F\\x7F]*$")),
    responses(
        (status = 200, description = "Every session of the user is ended; their access tokens are rejected at once.", body = SessionsEnded),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(Forbidden)),
        (status = 404, response = inline(NotFound)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
    Ok(Json(SessionsEnded {
        sessions_ended: ended,
    })
    .into_response())
}

/// `?type=&user=&before=&limit=` of `GET /admin/audit`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events of this kind.
    #[serde(rename = "type")]
    #[param(rename = "type", pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    kind: Option<String>,
    /// Only events about this user id.
    #[param(pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    user: Option<String>,
    /// The `next_before` of the previous page.
    before: Option<i64>,
    /// Page size, 1 to 500 (50 by default; out of range is clamped).
    limit: Option<i64>,
}

/// One page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage<'a> {
    events: Vec<AuditEventView<'a>>,
    /// The `before` of the next page; null on the last.
    next_before: Option<i64>,
}

/// `GET /admin/audit?type=&user=&before=&limit=`: newest first, by cursor.
#[utoipa::path(
    get,
    path = "/admin/audit",
    tag = "admin",
    operation_id = "admin_audit",
    security(("bearer" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "Audit events, newest first, paged.", body = AuditPage),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(Forbidden)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
    let next_before = if rows.len() as i64 == limit {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        events: rows.iter().map(AuditEventView::from).collect(),
        next_before,
    })
    .into_response())
}

/// `?hours=` of `GET /admin/stats`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// The window: the last 1 to 168 hours (24 by default).
    #[param(minimum = 1, maximum = 168)]
    hours: Option<i64>,
}

/// The sign-in activity of one hour.
#[derive(Serialize, ToSchema)]
pub struct HourView {
    /// Start of the hour, Unix seconds (a whole UTC hour).
    start: i64,
    /// Successful logins (`login_succeeded` events).
    logins_succeeded: i64,
    /// Failed logins (`login_failed` events).
    logins_failed: i64,
    /// Rate-limit refusals recorded in the audit log
    /// (`login_rate_limited`, `request_budget_exceeded`: the first per
    /// client per minute; the metrics count every one).
    rate_limited: i64,
}

/// Sign-in activity per hour, oldest first.
#[derive(Serialize, ToSchema)]
pub struct ActivityView {
    /// The window in hours.
    hours: i64,
    /// Seconds per bucket: always 3600.
    bucket_seconds: i64,
    /// One per hour, oldest first, empty hours included; the last is the
    /// hour in progress.
    buckets: Vec<HourView>,
}

/// `GET /admin/stats?hours=`: logins, failed logins and rate-limit
/// refusals per hour, counted from the audit log.
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    operation_id = "admin_stats",
    security(("bearer" = [])),
    params(StatsParams),
    responses(
        (status = 200, description = "Sign-in activity per hour over the window, oldest first.", body = ActivityView),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(Forbidden)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn admin_stats(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<StatsParams>,
) -> Result<Response, ApiError> {
    let hours = activity::parse_hours(q.hours)?;
    let now = state.clock.now().as_secs();
    let activity = activity::activity(&state.store, now, hours).await?;
    Ok(Json(ActivityView {
        hours: activity.hours,
        bucket_seconds: activity::BUCKET_SECONDS,
        buckets: activity
            .buckets
            .into_iter()
            .map(|b| HourView {
                start: b.start,
                logins_succeeded: b.logins_succeeded,
                logins_failed: b.logins_failed,
                rate_limited: b.rate_limited,
            })
            .collect(),
    })
    .into_response())
}
