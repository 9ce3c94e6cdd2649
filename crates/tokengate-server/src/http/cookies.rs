//! Cookie mode: the three cookies a browser session lives in, written as
//! `Set-Cookie` values, and which way a login or refresh answers.
//!
//! - `__Host-tg_access`: the access token. `HttpOnly` (no script reads it),
//!   `Secure`, `Path=/`, `Max-Age` = the access lifetime. The `__Host-`
//!   prefix makes the browser refuse it unless it is `Secure`, `Path=/`
//!   and has no `Domain`, so a sibling subdomain cannot set it.
//! - `__Secure-tg_refresh`: the refresh token. `HttpOnly`, `Secure`, scoped
//!   to the service's `/auth/` path: sent to refresh and to logout (a
//!   browser whose access cookie has expired can still end its session),
//!   never to the APIs on `/` nor to the pages. It cannot be `__Host-`
//!   (that needs `Path=/`); `__Secure-` still makes the browser insist on
//!   `Secure`.
//! - `__Host-tg_csrf`: the session's CSRF token, readable by the page's
//!   script, which echoes it in `X-CSRF-Token` (see
//!   [`tokengate::guard::CsrfPolicy`]).
//!
//! All three are `SameSite` (`cookie_same_site`). With
//! `cookie_insecure_dev` (loopback only) they drop `Secure` and the
//! prefixes: browsers refuse prefixed cookies without `Secure`.

use axum::http::{HeaderMap, HeaderValue};

use crate::http::error::ApiError;
use crate::infra::config::{CookieMode, Settings};
use crate::service::IssuedTokens;

/// How a login or refresh hands its tokens over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// In the JSON body, for `Authorization: Bearer` (the default).
    Body,
    /// In `HttpOnly` cookies; the body holds no token.
    Cookie,
}

impl Delivery {
    /// The delivery a request gets: what it asks for (in the query or the
    /// body, which must agree), within what `cookie_mode` allows.
    pub fn choose(
        mode: CookieMode,
        in_query: Option<Delivery>,
        in_body: Option<Delivery>,
    ) -> Result<Delivery, ApiError> {
        let asked = match (in_query, in_body) {
            (Some(q), Some(b)) if q != b => {
                return Err(invalid_mode(
                    "The mode in the query and in the body differ.",
                ));
            }
            (q, b) => q.or(b),
        };
        match (mode, asked) {
            (CookieMode::Off, Some(Delivery::Cookie)) => Err(invalid_mode(
                "Cookie mode is switched off on this service (cookie_mode = off).",
            )),
            (CookieMode::Always, Some(Delivery::Body)) => Err(invalid_mode(
                "This service hands tokens over in cookies only (cookie_mode = always).",
            )),
            (CookieMode::Always, _) => Ok(Delivery::Cookie),
            (_, asked) => Ok(asked.unwrap_or(Delivery::Body)),
        }
    }
}

fn invalid_mode(detail: &str) -> ApiError {
    ApiError::Invalid {
        field: "mode".into(),
        detail: detail.to_owned(),
    }
}

/// The cookie-mode cookies as the settings shape them.
#[derive(Debug, Clone, Copy)]
pub struct BrowserCookies<'a> {
    settings: &'a Settings,
}

impl<'a> BrowserCookies<'a> {
    /// The cookies of this configuration.
    pub fn of(settings: &'a Settings) -> Self {
        BrowserCookies { settings }
    }

    fn insecure(&self) -> bool {
        self.settings.cookie_insecure_dev
    }

    /// Whether cookies are set and read at all.
    pub fn enabled(&self) -> bool {
        self.settings.cookie_mode != CookieMode::Off
    }

    /// The access-token cookie's name.
    pub fn access_name(&self) -> &'static str {
        if self.insecure() {
            "tg_access"
        } else {
            tokengate::guard::DEFAULT_ACCESS_COOKIE
        }
    }

    /// The refresh-token cookie's name.
    pub fn refresh_name(&self) -> &'static str {
        if self.insecure() {
            "tg_refresh"
        } else {
            "__Secure-tg_refresh"
        }
    }

    /// The CSRF-token cookie's name.
    pub fn csrf_name(&self) -> &'static str {
        if self.insecure() {
            "tg_csrf"
        } else {
            tokengate::guard::DEFAULT_CSRF_COOKIE
        }
    }

    /// The refresh cookie's `Path`: the service's `/auth/` endpoints as
    /// clients reach them, `public_url`'s path (a service behind a path
    /// prefix) + `/auth/`. Refresh and logout read it; no other endpoint
    /// does, and the cookie is never sent outside `/auth/`.
    pub fn refresh_path(&self) -> String {
        format!("{}/auth/", self.path_prefix())
    }

    /// The refresh cookie's `Path` before release: the refresh endpoint
    /// alone. A browser that still holds a refresh cookie there sends it
    /// beside the current one to `/auth/refresh`, and two refresh cookies
    /// of one session are refused as ambiguous: every answer that sets or
    /// clears the refresh cookie also clears this one
    /// ([`BrowserCookies::cleared_legacy_refresh`]), so such a browser
    /// heals at its next login, refresh or logout.
    pub fn legacy_refresh_path(&self) -> String {
        format!("{}/auth/refresh", self.path_prefix())
    }

    /// `public_url`'s path, if it can stand in a cookie attribute.
    fn path_prefix(&self) -> &str {
        let prefix = self.settings.public_path();
        // A cookie attribute must not hold `;` or control characters.
        if prefix.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            prefix
        } else {
            ""
        }
    }

    /// One `Set-Cookie` value.
    fn cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        max_age: i64,
        http_only: bool,
    ) -> Result<HeaderValue, ApiError> {
        let mut text = format!("{name}={value}; Path={path}; Max-Age={}", max_age.max(0));
        if http_only {
            text.push_str("; HttpOnly");
        }
        if !self.insecure() {
            text.push_str("; Secure");
        }
        text.push_str(match self.settings.cookie_same_site {
            crate::infra::config::SameSite::Strict => "; SameSite=Strict",
            crate::infra::config::SameSite::Lax => "; SameSite=Lax",
        });
        // Our own tokens are base64url and JWTs: always header text.
        HeaderValue::from_str(&text)
            .map_err(|_| ApiError::Internal(format!("cookie {name} is not header text")))
    }

    /// The three cookies of a new token pair, after the clearing of the
    /// pre-release refresh cookie (first: a client that keeps one cookie
    /// per name keeps the one set).
    pub fn issued(&self, tokens: &IssuedTokens) -> Result<[HeaderValue; 4], ApiError> {
        Ok([
            self.cleared_legacy_refresh()?,
            self.cookie(
                self.access_name(),
                &tokens.access,
                "/",
                tokens.access_expires_in,
                true,
            )?,
            self.cookie(
                self.refresh_name(),
                tokens.refresh.expose(),
                &self.refresh_path(),
                tokens.refresh_expires_in,
                true,
            )?,
            // As long as the refresh token: a refresh needs it too.
            self.cookie(
                self.csrf_name(),
                &tokens.csrf_token,
                "/",
                tokens.refresh_expires_in,
                false,
            )?,
        ])
    }

    /// The access cookie, cleared (same name, path and attributes).
    pub fn cleared_access(&self) -> Result<HeaderValue, ApiError> {
        self.cookie(self.access_name(), "", "/", 0, true)
    }

    /// The refresh cookie at its pre-release path
    /// ([`BrowserCookies::legacy_refresh_path`]), cleared.
    pub fn cleared_legacy_refresh(&self) -> Result<HeaderValue, ApiError> {
        self.cookie(
            self.refresh_name(),
            "",
            &self.legacy_refresh_path(),
            0,
            true,
        )
    }

    /// All three cookies, cleared (and the pre-release refresh cookie).
    pub fn cleared(&self) -> Result<[HeaderValue; 4], ApiError> {
        Ok([
            self.cleared_access()?,
            self.cleared_legacy_refresh()?,
            self.cookie(self.refresh_name(), "", &self.refresh_path(), 0, true)?,
            self.cookie(self.csrf_name(), "", "/", 0, false)?,
        ])
    }

    /// Whether the request carries any of the three (or one twice).
    pub fn any_in(&self, headers: &HeaderMap) -> bool {
        self.enabled()
            && [self.access_name(), self.refresh_name(), self.csrf_name()]
                .iter()
                .any(|name| tokengate::guard::cookie_value(headers, name) != Ok(None))
    }

    /// Whether the request carries the access cookie (or it twice).
    pub fn access_in(&self, headers: &HeaderMap) -> bool {
        self.enabled() && tokengate::guard::cookie_value(headers, self.access_name()) != Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_follows_the_request_within_the_mode() {
        use CookieMode::*;
        use Delivery::*;
        assert_eq!(Delivery::choose(Allowed, None, None).ok(), Some(Body));
        assert_eq!(
            Delivery::choose(Allowed, Some(Cookie), None).ok(),
            Some(Cookie)
        );
        assert_eq!(
            Delivery::choose(Allowed, None, Some(Cookie)).ok(),
            Some(Cookie)
        );
        assert_eq!(
            Delivery::choose(Allowed, Some(Cookie), Some(Cookie)).ok(),
            Some(Cookie)
        );
        assert!(Delivery::choose(Allowed, Some(Cookie), Some(Body)).is_err());
        assert_eq!(Delivery::choose(Always, None, None).ok(), Some(Cookie));
        assert!(Delivery::choose(Always, Some(Body), None).is_err());
        assert!(Delivery::choose(Off, Some(Cookie), None).is_err());
        assert_eq!(Delivery::choose(Off, None, Some(Body)).ok(), Some(Body));
    }
}
