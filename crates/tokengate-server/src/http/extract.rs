//! Extractors: JSON bodies, query strings and path segments whose
//! rejections are problem documents naming the field, and the access-token
//! authentication every protected route uses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use tokengate::AccessClaims;

use super::error::ApiError;
use crate::domain::{SessionId, UserId};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;

/// The client's address, as the `client_ip` middleware resolved it once per
/// request (the peer, or behind a trusted proxy the forwarded address).
impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .ok_or_else(|| ApiError::Internal("client address not resolved".into()))
    }
}

/// `Json<T>` with problem+json rejections: a body that is not JSON is a
/// 400, one that parses but does not fit is a 422 naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // axum reads the body within the limit and checks the content type
        // and the syntax; the shape is ours to check.
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => object_of(&value).map(ApiJson),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_)) => {
                Err(ApiError::MalformedJson)
            }
            Err(JsonRejection::BytesRejection(e)) => Err(body_unreadable(&e)),
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

/// An optional JSON body: empty (or only whitespace) gives `T::default()`;
/// anything else must be JSON of type `T`, with `ApiJson`'s rejections.
pub struct OptionalApiJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declares_json = declares_json(req.headers());
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_unreadable(&e))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(T::default()));
        }
        if !declares_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| ApiError::MalformedJson)?;
        object_of(&value).map(OptionalApiJson)
    }
}

/// Whether the content type is JSON as axum's own check says:
/// `application/json` or `application/<anything>+json`, any case, with
/// parameters.
fn declares_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// A request body's value as `T`: it must be a JSON object (serde would
/// also take an array for a struct, by position), and a mistake names the
/// field by its path.
fn object_of<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::Invalid {
            detail: "The body must be a JSON object.".to_owned(),
            field: "body".into(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mistake = FieldMistake::parse(&e.to_string());
        ApiError::Invalid {
            detail: mistake.sentence(Place::Body),
            field: mistake.field.into(),
        }
    })
}

/// A body that could not be read: over the limit, or cut off.
fn body_unreadable(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BodyUnreadable
    }
}

/// `Query<T>` with problem+json rejections: a 400 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(field) = query_field_with_control(parts.uri.query().unwrap_or_default()) {
            return Err(ApiError::InvalidQuery {
                detail: format!("The '{field}' in the query holds a control character."),
                field: field.into(),
            });
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(e) => {
                let mistake = FieldMistake::parse(&innermost_message(&e));
                Err(ApiError::InvalidQuery {
                    detail: mistake.sentence(Place::Query),
                    field: mistake.field.into(),
                })
            }
        }
    }
}

/// `Path<T>` with problem+json rejections: a 400 naming the segment.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        // No id has a control character, and a NUL is an error in a
        // PostgreSQL text value: refused here as the client's mistake.
        if let Ok(raw) = axum::extract::RawPathParams::from_request_parts(parts, state).await
            && let Some((key, _)) = raw
                .iter()
                .find(|(_, value)| value.chars().any(char::is_control))
        {
            return Err(ApiError::InvalidPath {
                detail: format!("The '{key}' in the path is not valid."),
                field: key.to_owned().into(),
            });
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let field = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => key.clone(),
                    _ => "path".to_owned(),
                };
                Err(ApiError::InvalidPath {
                    detail: format!("The '{field}' in the path is not valid."),
                    field: field.into(),
                })
            }
            // The route and the handler disagree: our bug, not the client's.
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

/// The name of the first query parameter whose value (or name) encodes a
/// control character (`%00`–`%1F`, `%7F`): none belongs in a filter or a
/// cursor, and a NUL is an error in a PostgreSQL text value.
fn query_field_with_control(query: &str) -> Option<String> {
    fn encodes_control(raw: &str) -> bool {
        raw.split('%').skip(1).any(|rest| {
            rest.get(..2)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|byte| byte < 0x20 || byte == 0x7f)
        })
    }
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (encodes_control(name) || encodes_control(value)).then(|| {
            if encodes_control(name) {
                "query".to_owned()
            } else {
                name.to_owned()
            }
        })
    })
}

/// The last error in a rejection's source chain: serde's own message, with
/// the field path in front when the failing value was inside a field.
fn innermost_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// Where a value the client sent lives, for the words of the answer.
#[derive(Clone, Copy)]
enum Place {
    Body,
    Query,
}

/// What serde found wrong, read from its message: the field it names and
/// the kind of mistake. Only serde's fixed wording is relied on; anything
/// unrecognised becomes a generic sentence. The client's values are never
/// repeated (a password could be one of them) and the parser's position
/// ("at line 1 column 27") never leaves.
#[derive(Debug, PartialEq)]
struct FieldMistake {
    /// The field or parameter (`"body"` when serde names none).
    field: String,
    kind: MistakeKind,
}

#[derive(Debug, PartialEq)]
enum MistakeKind {
    Missing,
    Unknown,
    Duplicate,
    /// The value has the wrong type; the plain name of the expected one.
    WrongType(&'static str),
    Invalid,
}

/// The longest field name repeated back (an unknown field is the client's
/// text).
const FIELD_NAME_LIMIT: usize = 64;

impl FieldMistake {
    fn parse(message: &str) -> FieldMistake {
        let message = strip_position(message);
        // serde's own messages start with these; anything before ": " that
        // is not one of them is the path serde_path_to_error put in front.
        const SERDE_STARTS: [&str; 7] = [
            "missing field `",
            "unknown field `",
            "duplicate field `",
            "invalid type: ",
            "invalid value: ",
            "invalid length ",
            "unknown variant `",
        ];
        let (path, message) = match message.split_once(": ") {
            Some((path, rest)) if !SERDE_STARTS.iter().any(|s| message.starts_with(s)) => {
                (Some(field_of_path(path)), rest)
            }
            _ => (None, message),
        };
        let named = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').next())
                .map(|name| match &path {
                    // For an unknown field the path already ends with it.
                    Some(path) if path == name || path.ends_with(&format!(".{name}")) => {
                        path.clone()
                    }
                    Some(path) => format!("{path}.{name}"),
                    None => name.to_owned(),
                })
        };
        let at_path = || path.clone().unwrap_or_else(|| "body".to_owned());
        let (field, kind) = if let Some(field) = named("missing field `") {
            (field, MistakeKind::Missing)
        } else if let Some(field) = named("unknown field `") {
            (field, MistakeKind::Unknown)
        } else if let Some(field) = named("duplicate field `") {
            (field, MistakeKind::Duplicate)
        } else if let Some(rest) = message.strip_prefix("invalid type: ") {
            let expected = rest.rsplit_once(", expected ").map_or("", |(_, e)| e);
            (at_path(), MistakeKind::WrongType(plain_type(expected)))
        } else if is_integer_parse_error(message) {
            // A query parameter given to `i64::from_str`.
            (at_path(), MistakeKind::WrongType("a whole number"))
        } else {
            (at_path(), MistakeKind::Invalid)
        };
        let field = match field.char_indices().nth(FIELD_NAME_LIMIT) {
            Some((cut, _)) => field[..cut].to_owned(),
            None => field,
        };
        FieldMistake { field, kind }
    }

    /// The answer in plain words, naming the field as a person would.
    fn sentence(&self, place: Place) -> String {
        let name = match (place, self.field.as_str()) {
            (_, "body") => "The body".to_owned(),
            (Place::Body, field) => format!("The {}", field.replace('_', " ")),
            (Place::Query, field) => format!("The query parameter '{field}'"),
        };
        match (&self.kind, place) {
            (MistakeKind::Missing, _) => format!("{name} is missing."),
            (MistakeKind::Unknown, Place::Body) => {
                format!("'{}' is not a field this endpoint accepts.", self.field)
            }
            (MistakeKind::Unknown, Place::Query) => format!(
                "'{}' is not a query parameter this endpoint accepts.",
                self.field
            ),
            (MistakeKind::Duplicate, _) => format!("{name} is given more than once."),
            (MistakeKind::WrongType(expected), _) => format!("{name} must be {expected}."),
            (MistakeKind::Invalid, _) => format!("{name} is not valid."),
        }
    }
}

/// Drops serde_json's " at line L column C" suffix.
fn strip_position(message: &str) -> &str {
    match message.rsplit_once(" at line ") {
        Some((head, tail))
            if tail
                .split_once(" column ")
                .is_some_and(|(line, column)| is_number(line) && is_number(column)) =>
        {
            head
        }
        _ => message,
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `roles[0]` is the `roles` field; `a.b` stays as it is; `[0]` (an array
/// where an object belongs) is the body.
fn field_of_path(path: &str) -> String {
    match path.split('[').next() {
        Some(field) if !field.is_empty() => field.to_owned(),
        _ => "body".to_owned(),
    }
}

/// `core::num::ParseIntError`'s messages.
fn is_integer_parse_error(message: &str) -> bool {
    [
        "invalid digit found in string",
        "cannot parse integer from empty string",
        "number too large to fit in target type",
        "number too small to fit in target type",
    ]
    .contains(&message)
}

/// serde's `expected …` in words a client developer uses.
fn plain_type(expected: &str) -> &'static str {
    match expected {
        "a string" => "a string",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "an integer" => {
            "a whole number"
        }
        e if e.starts_with("struct ") || e == "a map" => "a JSON object",
        _ => "of another type",
    }
}

/// A request carrying a valid, unrevoked access token in
/// `Authorization: Bearer`, or (cookie mode) in the access cookie, which
/// for a method other than GET, HEAD and OPTIONS must also pass the CSRF
/// check (403 otherwise). The query string is never looked at. Who it is
/// for is parsed once, here.
pub struct Authenticated {
    /// The user (`sub`).
    pub user_id: UserId,
    /// The session (`sid`, which the policy requires).
    pub session_id: SessionId,
    /// The verified claims.
    pub claims: AccessClaims,
    /// Whether the token came from the cookie-mode access cookie.
    pub from_cookie: bool,
}

impl Authenticated {
    /// The 401 for a caller whose token verified but who is gone (no such
    /// user, or disabled): the access cookie it came from is cleared.
    pub fn gone(&self) -> ApiError {
        if self.from_cookie {
            ApiError::InvalidAccessCookie
        } else {
            ApiError::InvalidToken { presented: true }
        }
    }
}

/// An authenticated caller whose *current* roles (read from the database,
/// not trusted from the token) include `admin`, and who is not disabled.
pub struct Admin {
    /// The admin's user id.
    pub id: UserId,
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        let user = state
            .store
            .user_by_id(&caller.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| caller.gone())?;
        if user.roles.contains("admin") {
            Ok(Admin { id: user.id })
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// The guard's CSRF check of a request authenticated by a cookie holding
/// `verified` (a 403 when it fails), and the refusal's audit row
/// (`csrf_refused`, at most one per client per minute: the service's rule).
/// Shared by [`Authenticated`] and `/auth/verify`. `path` is the route's
/// template or a constant, never the path the client sent.
pub async fn check_csrf(
    state: &AppState,
    client: Option<std::net::IpAddr>,
    path: &str,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    verified: &tokengate::guard::VerifiedToken,
) -> Result<(), ApiError> {
    let Err(rejection) = state.guard.check_csrf(method, headers, verified) else {
        return Ok(());
    };
    // The guard logged and counted the reason; the row names it too (the
    // check is a few digests, cheap to run again on this refusal path).
    let reason = state
        .guard
        .csrf_policy()
        .check_token(method, headers, verified)
        .err()
        .map_or("csrf", |failure| failure.code());
    if let Some(client) = client {
        state
            .sessions
            .csrf_refused(crate::service::CsrfRefusal {
                client,
                user_id: Some(verified.subject()).filter(|sub| !sub.is_empty()),
                session_id: verified.session(),
                path,
                reason,
            })
            .await;
    }
    Err(rejection.into())
}

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // The library's guard: the one implementation of "a valid,
        // unrevoked access token", shared with `/auth/verify` and with the
        // APIs that use the library.
        let guard = &state.guard;
        let presented = guard
            .presented_token(&parts.headers)?
            .ok_or(ApiError::InvalidToken { presented: false })?;
        let from_cookie = presented.from_cookie();
        // A refused token from the access cookie is marked, so that the
        // cookie is cleared; any other refusal leaves cookies alone.
        let refused = |rejection: ApiError| match rejection {
            ApiError::InvalidToken { presented: true } if from_cookie => {
                ApiError::InvalidAccessCookie
            }
            other => other,
        };
        // `Guard::check_presented` in its two steps, so that a CSRF
        // refusal knows whose token it refused (for its audit row).
        let verified = guard
            .verify(presented.value())
            .await
            .map_err(|r| refused(r.into()))?;
        if from_cookie {
            let client = parts.extensions.get::<ClientIp>().map(|c| c.0);
            // The route's template (`/auth/sessions/{id}`), never the path
            // sent: that is the client's own text, up to the 64 KiB of a
            // URI, which the audit row and its log line would keep.
            let route = parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map_or("unmatched", axum::extract::MatchedPath::as_str);
            check_csrf(
                state,
                client,
                route,
                &parts.method,
                &parts.headers,
                &verified,
            )
            .await?;
        }
        let claims: AccessClaims = verified.claims().map_err(|e| {
            tracing::info!(event = "access_token_rejected", reason = e.code(), detail = %e);
            refused(ApiError::InvalidToken { presented: true })
        })?;
        // The policy requires `sid`; a token without one never gets here.
        let session_id = claims
            .sid
            .clone()
            .ok_or_else(|| refused(ApiError::InvalidToken { presented: true }))?;
        Ok(Authenticated {
            user_id: UserId::from(claims.sub.clone()),
            session_id: SessionId::from(session_id),
            claims,
            from_cookie,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mistake(message: &str) -> FieldMistake {
        FieldMistake::parse(message)
    }

    #[test]
    fn control_characters_are_found_in_any_query_and_only_there() {
        let huge = format!("a={}", "x".repeat(100_000));
        for clean in [
            "",
            "%",
            "a=%",
            "a=%0",
            "a=%zz",
            "a=%20b",
            "a=%C3%A9",
            "é=é",
            "a&&b=",
            huge.as_str(),
        ] {
            assert_eq!(query_field_with_control(clean), None, "{clean:.40}");
        }
        for (query, field) in [
            ("a=1&email=%00", "email"),
            ("after=x%1Fy", "after"),
            ("user=%7f", "user"),
            ("%00=1", "query"),
        ] {
            assert_eq!(
                query_field_with_control(query).as_deref(),
                Some(field),
                "{query}"
            );
        }
        let mut huge = huge;
        huge.push_str("&b=%0a");
        assert_eq!(query_field_with_control(&huge).as_deref(), Some("b"));
    }

    #[test]
    fn a_missing_field_is_named_without_the_parser_position() {
        let m = mistake("missing field `password` at line 1 column 27");
        assert_eq!(m.field, "password");
        assert_eq!(m.kind, MistakeKind::Missing);
        assert_eq!(m.sentence(Place::Body), "The password is missing.");
        let m = mistake("missing field `current_password` at line 1 column 2");
        assert_eq!(m.sentence(Place::Body), "The current password is missing.");
    }

    #[test]
    fn a_wrong_type_names_the_field_and_never_repeats_the_value() {
        let m = mistake(
            "password: invalid type: string \"hunter2\", expected a boolean at line 1 column 9",
        );
        assert_eq!(m.field, "password");
        let sentence = m.sentence(Place::Body);
        assert_eq!(sentence, "The password must be true or false.");
        assert!(!sentence.contains("hunter2"));
        let m =
            mistake("roles[1]: invalid type: integer `5`, expected a string at line 1 column 9");
        assert_eq!(m.field, "roles");
        assert_eq!(m.kind, MistakeKind::WrongType("a string"));
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_the_body() {
        let m = mistake("invalid type: sequence, expected struct Credentials at line 1 column 0");
        assert_eq!(m.field, "body");
        assert_eq!(m.sentence(Place::Body), "The body must be a JSON object.");
        let m = mistake("[0]: invalid type: integer `1`, expected a string at line 1 column 2");
        assert_eq!(m.field, "body");
    }

    #[test]
    fn unknown_fields_are_named_and_cut_short() {
        let m = mistake("unknown field `scop`, expected `scope` at line 1 column 7");
        assert_eq!(m.field, "scop");
        assert_eq!(m.kind, MistakeKind::Unknown);
        let long = format!("unknown field `{}`, expected `scope`", "x".repeat(500));
        assert_eq!(mistake(&long).field.len(), FIELD_NAME_LIMIT);
    }

    #[test]
    fn a_query_integer_that_does_not_parse_is_a_whole_number_to_fix() {
        let m = mistake("limit: invalid digit found in string");
        assert_eq!(m.field, "limit");
        assert_eq!(
            m.sentence(Place::Query),
            "The query parameter 'limit' must be a whole number."
        );
    }

    #[test]
    fn an_unrecognised_message_still_names_the_field() {
        let m = mistake("before: something new in a later serde");
        assert_eq!(m.field, "before");
        assert_eq!(m.kind, MistakeKind::Invalid);
        assert_eq!(mistake("gibberish").field, "body");
    }
}
