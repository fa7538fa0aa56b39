//! Errors about a config file that say where it is wrong and why, and never what it holds: a
//! database URL with its password, or the API token, may sit under the wrong key, and errors go
//! to terminals, logs and bug reports.
//!
//! Two guards: the parser's report is reduced to the place and the reason ([`syntax`]), and
//! every value the file holds (each string, each word of one, each long number) is cut out of
//! an error before it is shown ([`FileValues`]), so that no check, present or future, can quote
//! one. The key, or its section, finds the value.

/// Keys whose values name things (a schedule, a job kind, a retention policy's tables and
/// columns): shown, so that an error can say which schedule, task or table it is about.
const NAMING_KEYS: &[&str] = &[
    "name",
    "kind",
    "table",
    "archive_table",
    "id_column",
    "age_column",
    "fallback_column",
];

/// Shorter values are left in, a trade: a credential that short is unlikely, and cutting every
/// `default`, `mail` or `1d` of a file out of its messages (wherever the word appears) would
/// leave them unreadable.
const SHORTEST_HIDDEN: usize = 8;

/// What stands for a value cut out of an error.
const HIDDEN: &str = "(value not shown)";

/// The values of a config file (strings and their words, numbers of eight characters or more,
/// array items included, keys not), to be cut out of the errors about it.
pub(crate) struct FileValues(Vec<String>);

impl FileValues {
    /// The values of `text`; none when it does not parse as TOML (its error comes from the
    /// parser, which [`syntax`] reduces).
    pub(crate) fn of(text: &str) -> FileValues {
        let mut values = Vec::new();
        if let Ok(table) = text.parse::<toml::Table>() {
            collect_table(&table, &mut values);
        }
        // Longest first: a value inside a longer one must not leave the rest of it shown.
        values.sort_by_key(|value: &String| std::cmp::Reverse(value.len()));
        values.dedup();
        FileValues(values)
    }

    /// `message` with every value of the file, as written or as `{:?}` writes it, and in any
    /// case (some checks lower it), replaced by [`HIDDEN`], quotes and all.
    pub(crate) fn hide(&self, message: &str) -> String {
        let mut message = message.to_owned();
        for value in &self.0 {
            let escaped = format!("{value:?}");
            let escaped = &escaped[1..escaped.len() - 1];
            for form in [value.as_str(), escaped] {
                message = cut(&message, form);
            }
        }
        message
    }
}

/// What the engine refused in what `config` declares (a cron job's args, a task), said as the
/// config's own errors are: naming the file, with the file's values cut out (a cron job's args
/// may quote a token given where a number was due).
pub(crate) fn engine_refused(config: &crate::config::Config, err: drover::Error) -> anyhow::Error {
    let drover::Error::Config(message) = err else {
        return err.into();
    };
    match &config.source {
        Some(path) => {
            let values = FileValues::of(&std::fs::read_to_string(path).unwrap_or_default());
            anyhow::anyhow!(
                "invalid config {}: {}",
                path.display(),
                values.hide(&message)
            )
        }
        None => anyhow::anyhow!("invalid configuration: {message}"),
    }
}

fn collect_table(table: &toml::Table, out: &mut Vec<String>) {
    for (key, value) in table {
        if !NAMING_KEYS.contains(&key.as_str()) {
            collect(value, out);
        }
    }
}

fn collect(value: &toml::Value, out: &mut Vec<String>) {
    let mut add = |text: String| {
        if text.chars().count() >= SHORTEST_HIDDEN {
            out.push(text);
        }
    };
    match value {
        toml::Value::String(text) => {
            // Each word of it too: a check may quote the one it stopped at (a cron field).
            text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';'))
                .filter(|word| word.len() < text.len())
                .for_each(|word| add(word.to_owned()));
            add(text.clone());
        }
        toml::Value::Integer(n) => add(n.to_string()),
        toml::Value::Float(x) => add(x.to_string()),
        toml::Value::Array(items) => items.iter().for_each(|item| collect(item, out)),
        toml::Value::Table(table) => collect_table(table, out),
        _ => {}
    }
}

/// `message` with each occurrence of `value` (ASCII case ignored) replaced by [`HIDDEN`],
/// together with the quotes or backticks around it.
fn cut(message: &str, value: &str) -> String {
    if value.is_empty() {
        return message.to_owned();
    }
    // ASCII lowering keeps every byte offset, so positions found in one apply to the other.
    let lower = message.to_ascii_lowercase();
    let needle = value.to_ascii_lowercase();
    let mut out = String::with_capacity(message.len());
    let mut from = 0;
    let bytes = message.as_bytes();
    let word = |byte: u8| byte.is_ascii_alphanumeric();
    let mut at = 0;
    while let Some(found) = lower[at..].find(&needle) {
        let (mut start, mut end) = (at + found, at + found + needle.len());
        at = end;
        // Whole words only: a value `password` is not cut out of `passwords`.
        let glued_before = start > 0 && word(bytes[start - 1]) && word(needle.as_bytes()[0]);
        let glued_after =
            end < bytes.len() && word(bytes[end]) && word(needle.as_bytes()[needle.len() - 1]);
        if glued_before || glued_after {
            continue;
        }
        if start > from
            && end < bytes.len()
            && matches!(bytes[start - 1], b'"' | b'`')
            && bytes[end] == bytes[start - 1]
        {
            start -= 1;
            end += 1;
            at = end;
        }
        out.push_str(&message[from..start]);
        out.push_str(HIDDEN);
        from = end;
    }
    out.push_str(&message[from..]);
    out
}

/// Where a config file is wrong, and why, without the line itself: the parser's own report
/// quotes it, and the line may hold a database password or the API token.
pub(crate) fn syntax(err: &toml::de::Error, text: &str, values: &FileValues) -> String {
    // Only the message is cut: the place (`[worker] lease`) is the file's keys, not its values.
    let message = values.hide(&hide_numbers(&hide_strings(err.message().trim_end())));
    let message = message.as_str();
    let Some(span) = err.span() else {
        return message.to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    // A duplicate key's report points at the key without naming it.
    let on_key = message.starts_with("duplicate key");
    match key_at(text, line_start, span.start, on_key) {
        Some(key) => format!("line {line}, column {column} ({key}): {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// `message` with the text of every `string "..."` serde quotes (a wrong type's value, which
/// may be a secret put under the wrong key) left out.
fn hide_strings(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let after = &rest[at + "string \"".len()..];
        // The value ends at the last quote before serde's ", expected ...", or the last one.
        let end = after
            .rfind("\", expected")
            .or_else(|| after.rfind('"'))
            .unwrap_or(after.len());
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// `message` without the number serde quotes for a wrong type (``integer `98765432` ``), which
/// may be a numeric secret under the wrong key.
fn hide_numbers(message: &str) -> String {
    let mut out = message.to_owned();
    for (quoted, plain) in [
        ("integer `", "an integer"),
        ("floating point `", "a number"),
    ] {
        while let Some(at) = out.find(quoted) {
            let after = at + quoted.len();
            let Some(end) = out[after..].find('`') else {
                break;
            };
            out.replace_range(at..after + end + 1, plain);
        }
    }
    out
}

/// The key whose value holds `at` (or, `on_key`, whose key does), with its table (`[worker]
/// counts_cap`), when the line is a plain `key = value`: a wrong type's message names only the
/// type. The key and the table's header are quoted, never the value, which may be a secret.
fn key_at(text: &str, line_start: usize, at: usize, on_key: bool) -> Option<String> {
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let plain = |part: &str| {
        !part.is_empty()
            && part.len() <= 64
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
    };
    let key = key.trim();
    if (!on_key && at < line_start + line.find('=')?) || !plain(key) {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .filter(|header| header.len() <= 80 && !header.contains('='));
    Some(match table {
        Some(header) => format!("{header} {key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_the_file_is_cut_out_of_a_message() {
        let values = FileValues::of(
            r#"
[worker]
lease = "postgres://u:S3cret@h/db"
[[cron]]
name = "nightly"
schedule = "0 3 * * *"
kind = "report"
timezone = 'Europe/"Mars'
[tasks.k]
command = ["true", "--token=abcdefgh"]
"#,
        );
        let hidden = values.hide(
            "cron \"nightly\": lease \"postgres://u:S3cret@h/db\" is not a duration; \
             sync POSTGRES://U:S3CRET@H/DB; zone `Europe/\\\"Mars`; flag --token=abcdefgh; 0 3 * * * bad",
        );
        assert_eq!(
            hidden,
            "cron \"nightly\": lease (value not shown) is not a duration; sync (value not shown); \
             zone (value not shown); flag (value not shown); (value not shown) bad"
        );
    }

    #[test]
    fn a_word_of_a_value_and_a_long_number_are_cut_too() {
        let values = FileValues::of("a = \"* * * * * SECRETTOKEN1\"\nb = 98765432109\n");
        assert_eq!(
            values.hide("the day of week field \"SECRETTOKEN1\": bad; pool 98765432109"),
            "the day of week field (value not shown): bad; pool (value not shown)"
        );
        assert_eq!(
            hide_numbers("invalid type: integer `98765432109`, expected a string"),
            "invalid type: an integer, expected a string"
        );
    }

    #[test]
    fn short_values_words_inside_words_and_unparsed_files_hide_nothing() {
        assert_eq!(
            FileValues::of("a = \"default\"").hide("the default"),
            "the default"
        );
        assert_eq!(
            FileValues::of("a = [\"truetrue\"]").hide("untruetrue"),
            "untruetrue"
        );
        assert_eq!(FileValues::of("a = = 1").hide("a = 1"), "a = 1");
    }

    #[test]
    fn a_duplicate_key_is_named_not_its_values() {
        let text = "[worker]\nlease = \"30s\"\nlease = \"secret-duration\"\n";
        let err = toml::from_str::<toml::Table>(text).expect_err("a duplicate key");
        let said = syntax(&err, text, &FileValues::of(text));
        assert!(
            said.starts_with("line 3, column 1 ([worker] lease): duplicate key"),
            "{said}"
        );
        assert!(!said.contains("secret-duration"), "{said}");
    }
}
