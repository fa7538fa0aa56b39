//! Signing in to the dashboard when a token guards the server. A browser cannot send a bearer
//! header on a page load, so the operator pastes the token once; the server answers with a
//! random session id in a cookie (`HttpOnly`, `SameSite=Strict`) that stands for the token
//! from then on. The token itself never goes into a cookie, a URL or a log.
//!
//! Sessions live in this process's memory: a restart signs everyone out, and behind a load
//! balancer each process has its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav};
use crate::http::AppState;

/// The cookie's name.
const COOKIE: &str = "drover_session";
/// How long a session lasts from sign-in.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; the oldest goes first.
const MAX_SESSIONS: usize = 1000;

/// The signed-in browsers.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// A new session id (128 random bits from the operating system).
    fn open(&self) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, opened| now.duration_since(*opened) < LIFETIME);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, opened)| **opened)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), now);
        Ok(id)
    }

    fn close(&self, id: &str) {
        let mut sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(id);
    }

    /// True when the request carries the cookie of a live session.
    pub(crate) fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        let sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .is_some_and(|opened| opened.elapsed() < LIFETIME)
    }
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

/// Only a path on this server, so the login page cannot be used to send someone elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub(crate) async fn login_page(
    State(state): State<AppState>,
    Query(next): Query<Next>,
) -> Response {
    if state.settings.token.is_none() {
        return Redirect::to(&safe_next(next.next.as_deref())).into_response();
    }
    form(&safe_next(next.next.as_deref()), None, StatusCode::OK)
}

fn form(next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.card.login {
            p { "This server is protected by a token. Paste it to open the dashboard in this browser." }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "Token"
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                }
                @if let Some(error) = error { p.form-error role="alert" { (error) } }
                div.buttons { button type="submit" { "Sign in" } }
            }
        }
    };
    (status, layout::page("Sign in", Nav::None, body, false)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct Login {
    token: String,
    next: Option<String>,
}

pub(crate) async fn login(State(state): State<AppState>, Form(login): Form<Login>) -> Response {
    let next = safe_next(login.next.as_deref());
    let Some(expected) = &state.settings.token else {
        return Redirect::to(&next).into_response();
    };
    if !crate::http::auth::same(login.token.trim(), expected) {
        return form(
            &next,
            Some("That is not the token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let id = match state.sessions.open() {
        Ok(id) => id,
        Err(err) => {
            tracing::error!(error = %err, "no random bytes for a session id");
            return (StatusCode::SERVICE_UNAVAILABLE, "cannot open a session").into_response();
        }
    };
    let mut response = Redirect::to(&next).into_response();
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        state.sessions.close(id);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("drover_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next(Some("/jobs?state=failed")), "/jobs?state=failed");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_session_is_known_by_its_cookie_until_closed() {
        let sessions = Sessions::default();
        let id = sessions.open().unwrap();
        assert_eq!(id.len(), 32);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("theme=dark; {COOKIE}={id}").parse().unwrap(),
        );
        assert!(sessions.signed_in(&headers));
        sessions.close(&id);
        assert!(!sessions.signed_in(&headers));
        let mut forged = HeaderMap::new();
        forged.insert(header::COOKIE, format!("{COOKIE}=00").parse().unwrap());
        assert!(!sessions.signed_in(&forged));
    }
}
