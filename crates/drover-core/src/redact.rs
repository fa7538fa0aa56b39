//! Database URLs as they may appear in logs and errors: without a password, wherever the URL
//! carries one.
//!
//! A URL is parsed with the `url` crate rather than cut at `:` and `@` by hand: a password may
//! contain `@`, `:` or `/`, and libpq-style URLs also take it as the query options `password=`
//! and `sslpassword=`. A URL the parser refuses (a bad port, say — exactly the one an error
//! message is about) is reduced to its scheme, since nothing in it can be trusted to be safe.

/// Query options whose value is a secret (compared without regard to case).
const SECRET_OPTIONS: &[&str] = &["password", "sslpassword", "pass", "passwd", "pwd"];

/// What a secret is replaced with.
const MASK: &str = "***";

/// The URL with its password and any secret query option replaced by `***`.
///
/// ```
/// use drover_core::redact::redact_url;
/// assert_eq!(redact_url("postgres://u:p%40ss@h/db"), "postgres://u:***@h/db");
/// assert_eq!(
///     redact_url("postgres://h/db?sslmode=require&password=pw"),
///     "postgres://h/db?sslmode=require&password=***"
/// );
/// ```
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return unparsed(text);
    };
    // `user:secret@host` parses as the scheme `user` and an opaque path; `sqlite:drover.db`
    // is fine. An opaque URL with an `@` may hide a password in what is not userinfo to it.
    if url.cannot_be_a_base() && url.path().contains('@') {
        return unparsed(text);
    }
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = url.set_password(Some(MASK));
    }
    if let Some(query) = url.query() {
        let redacted = redact_query(query);
        url.set_query(Some(&redacted));
    }
    url.to_string()
}

/// `query` with the values of secret options masked, everything else as it was written.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret(key) => format!("{key}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret(key: &str) -> bool {
    let key = url::form_urlencoded::parse(key.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default();
    SECRET_OPTIONS.iter().any(|s| s.eq_ignore_ascii_case(&key))
}

/// The most of an unparseable URL that is surely safe: its scheme.
fn unparsed(text: &str) -> String {
    match text.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("{scheme}://{MASK} (not a valid URL)")
        }
        _ => format!("{MASK} (not a valid URL)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_the_userinfo_are_masked() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact_url("postgresql://u:a%3Ab%40c@h:5432/db?sslmode=disable"),
            "postgresql://u:***@h:5432/db?sslmode=disable"
        );
        // An `@` in the password, unescaped: the last one ends the userinfo.
        let redacted = redact_url("postgres://u:p@ss@h/db");
        assert!(
            !redacted.contains("p@ss") && !redacted.contains("ss@"),
            "{redacted}"
        );
    }

    #[test]
    fn urls_without_a_secret_are_unchanged() {
        for url in [
            "postgres://u@h/db",
            "postgres://h/db?schema=s1&sslmode=require",
            "sqlite:///var/lib/drover.db",
            "sqlite://drover.db?synchronous=normal",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn secret_query_options_are_masked() {
        assert_eq!(
            redact_url("postgres://u@h/db?password=pw&sslmode=require&sslpassword=k"),
            "postgres://u@h/db?password=***&sslmode=require&sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://u:x@h/db?PassWord=pw"),
            "postgres://u:***@h/db?PassWord=***"
        );
        assert_eq!(
            redact_url("sqlite://a.db?pass%77ord=pw"),
            "sqlite://a.db?pass%77ord=***"
        );
    }

    #[test]
    fn an_unparseable_url_keeps_only_its_scheme() {
        let redacted = redact_url("postgres://u:secret@h:99999/db");
        assert_eq!(redacted, "postgres://*** (not a valid URL)");
        assert_eq!(redact_url("u:secret@h"), "u://*** (not a valid URL)");
        assert_eq!(redact_url("not a url"), "*** (not a valid URL)");
        assert_eq!(redact_url("sqlite:drover.db"), "sqlite:drover.db");
    }
}
