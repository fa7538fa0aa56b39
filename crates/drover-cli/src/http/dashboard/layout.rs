//! The frame around every page: head, navigation, the live-refresh indicator, and the dialog
//! used to confirm actions.

use maud::{DOCTYPE, Markup, html};

/// Which navigation entry is the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Overview,
    Jobs,
    Queues,
    Cron,
    Retention,
    Processes,
    Capacity,
    /// Login and error pages.
    None,
}

const ENTRIES: [(Nav, &str, &str); 7] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::Jobs, "/jobs", "Jobs"),
    (Nav::Queues, "/queues", "Queues"),
    (Nav::Cron, "/cron", "Cron"),
    (Nav::Retention, "/retention", "Retention"),
    (Nav::Processes, "/processes", "Processes"),
    (Nav::Capacity, "/capacity", "Capacity"),
];

/// A whole page. `signed_in` shows the sign-out button (only when a token guards the server).
pub(super) fn page(title: &str, nav: Nav, body: Markup, signed_in: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Drover" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { span.logo aria-hidden="true" { "◆" } " Drover" }
                    @if nav != Nav::None {
                        nav {
                            @for (entry, href, label) in ENTRIES {
                                @if entry == nav {
                                    a.current href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        span #live.live title="This page refreshes itself while it is visible" {
                            span.dot {} span #live-text { "live" }
                        }
                    }
                    @if signed_in {
                        form.signout method="post" action="/logout" {
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                div #toast role="status" aria-live="polite" {}
                dialog #confirm {
                    form method="dialog" {
                        p #confirm-text {}
                        div.buttons {
                            button #confirm-cancel value="cancel" { "Back" }
                            button #confirm-ok.danger value="ok" autofocus { "Confirm" }
                        }
                    }
                }
            }
        }
    }
}

/// A labelled number for the top of a page.
pub(super) fn stat(label: &str, value: Markup) -> Markup {
    html! {
        div.stat {
            div.stat-value { (value) }
            div.stat-label { (label) }
        }
    }
}

/// `name` as one segment of a URL path: every byte but the unreserved ones percent-encoded, so
/// that a name with `/`, `?`, `#` or `%` (cron names may have them) reaches its own route.
pub(super) fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A button that POSTs to the API after the operator confirms `question`.
pub(super) fn action_button(label: &str, post: &str, question: &str, danger: bool) -> Markup {
    html! {
        button.action.danger[danger] type="button" data-post=(post) data-confirm=(question) {
            (label)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn a_name_with_url_syntax_stays_one_path_segment() {
        assert_eq!(path_segment("team/a:b"), "team%2Fa:b");
        assert_eq!(path_segment("a b?c#d%e"), "a%20b%3Fc%23d%25e");
        assert_eq!(path_segment("nightly-report_1.x"), "nightly-report_1.x");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
