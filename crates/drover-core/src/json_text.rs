//! JSON kept as text, so that numbers stay exact: a job's stored args ([`JobArgs`]), shown as
//! stored and pretty-printed without re-reading numbers ([`JobArgs::pretty`]), and containment
//! with exact numbers ([`json_contains`]): PostgreSQL's `jsonb @> jsonb`, for the args filter of
//! job lists on backends without it (SQLite).
//!
//! Numbers are compared as decimals, as PostgreSQL's `numeric` does: `1`, `1.0` and `10e-1` are
//! equal, and `12345678901234567890123` is not `12345678901234567890124`. Parsed into
//! `serde_json::Value` they would be `f64`s, equal past 2^53, and a filter would match, and an
//! action on it change, jobs it does not name. So values are read as raw text, one level at a
//! time, and numbers stay text until compared. Hand-written (a decimal's normal form is twenty
//! lines) rather than a big-decimal dependency for one comparison.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A job's args as stored: JSON text, served as is, so that a number keeps every digit
/// (through `serde_json::Value` one past 64 bits would come back as a float).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobArgs(Box<RawValue>);

impl JobArgs {
    /// Args from stored JSON text; an error when it is not JSON.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The args as a `serde_json::Value` (numbers past 64 bits become floats).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }

    /// Indented for reading, keys in order, every number as stored.
    pub fn pretty(&self) -> String {
        Tree::parse(&self.0)
            .and_then(|tree| serde_json::to_string_pretty(&tree).ok())
            .unwrap_or_else(|| self.get().to_owned())
    }
}

/// `{}`: no args.
impl Default for JobArgs {
    fn default() -> Self {
        Self(RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
    }
}

/// Equal when the texts are: args are compared as stored.
impl PartialEq for JobArgs {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// A JSON document read one level at a time: containers parsed, scalars kept as their text,
/// for re-printing ([`JobArgs::pretty`]) and for containment ([`json_contains`]). Repeated keys:
/// the last wins, as in PostgreSQL.
enum Tree<'a> {
    Scalar(&'a RawValue),
    Array(Vec<Tree<'a>>),
    Object(BTreeMap<String, Tree<'a>>),
}

impl<'a> Tree<'a> {
    fn parse(raw: &'a RawValue) -> Option<Tree<'a>> {
        let text = raw.get();
        Some(match text.as_bytes().first()? {
            b'{' => {
                let fields: BTreeMap<String, &RawValue> = serde_json::from_str(text).ok()?;
                Tree::Object(
                    fields
                        .into_iter()
                        .map(|(key, value)| Some((key, Tree::parse(value)?)))
                        .collect::<Option<_>>()?,
                )
            }
            b'[' => {
                let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
                Tree::Array(items.into_iter().map(Tree::parse).collect::<Option<_>>()?)
            }
            _ => Tree::Scalar(raw),
        })
    }

    fn is_container(&self) -> bool {
        !matches!(self, Tree::Scalar(_))
    }

    fn contains(&self, pattern: &Tree<'_>) -> bool {
        match (self, pattern) {
            (Tree::Object(doc), Tree::Object(pattern)) => pattern
                .iter()
                .all(|(key, want)| doc.get(key).is_some_and(|have| have.contains(want))),
            (Tree::Array(doc), Tree::Array(pattern)) => pattern
                .iter()
                .all(|want| doc.iter().any(|have| have.contains(want))),
            (Tree::Scalar(a), Tree::Scalar(b)) => same_scalar(a.get(), b.get()),
            _ => false,
        }
    }
}

impl Serialize for Tree<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Tree::Scalar(raw) => raw.serialize(serializer),
            Tree::Array(items) => serializer.collect_seq(items),
            Tree::Object(fields) => serializer.collect_map(fields),
        }
    }
}

/// Whether the JSON text `doc` contains the JSON text `pattern`, as PostgreSQL's
/// `jsonb @> jsonb` decides: an object contains an object whose every key it has with a
/// containing value; an array contains an array whose every element some element of it
/// contains; scalars contain equal scalars (numbers by value); and, at the top level only, an
/// array contains a scalar it has as an element. Text that is not JSON contains nothing.
pub fn json_contains(doc: &str, pattern: &str) -> bool {
    let parse = |text| {
        serde_json::from_str::<&RawValue>(text)
            .ok()
            .and_then(Tree::parse)
    };
    let (Some(doc), Some(pattern)) = (parse(doc), parse(pattern)) else {
        return false;
    };
    if let (Tree::Array(items), false) = (&doc, pattern.is_container()) {
        return items.iter().any(|item| item.contains(&pattern));
    }
    doc.contains(&pattern)
}

/// Whether two scalars' texts are the same value: strings once unescaped, numbers as decimals,
/// `true`, `false` and `null` as written.
fn same_scalar(a: &str, b: &str) -> bool {
    let number = |text: &str| text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    if a.starts_with('"') && b.starts_with('"') {
        serde_json::from_str::<String>(a).ok() == serde_json::from_str::<String>(b).ok()
    } else if number(a) && number(b) {
        Decimal::parse(a).is_some_and(|a| Decimal::parse(b) == Some(a))
    } else {
        a == b
    }
}

/// A JSON number in a normal form: `negative`, `digits` × 10^`exponent`, with no leading or
/// trailing zero in `digits` (zero is no digits, not negative), so that equal values are equal.
#[derive(Debug, PartialEq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    /// Reads a number as JSON writes it: `-?int(.frac)?([eE][+-]?exp)?`.
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
            Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
            None => (unsigned, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all = format!("{int}{frac}");
        if all.is_empty() || !all.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let significant = all.trim_start_matches('0');
        let digits = significant.trim_end_matches('0');
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits: String::new(),
                exponent: 0,
            });
        }
        let trailing = (significant.len() - digits.len()) as i64;
        let exponent = exponent
            .checked_sub(frac.len() as i64)?
            .checked_add(trailing)?;
        Some(Decimal {
            negative,
            digits: digits.to_owned(),
            exponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_follows_postgres() {
        let doc = r#"{"user": {"id": 7, "tags": ["a", "b"]}, "n": 1.0, "list": [1, [2, 3]]}"#;
        for (pattern, expected) in [
            ("{}", true),
            (r#"{"user": {"id": 7}}"#, true),
            (r#"{"user": {"tags": ["b"]}}"#, true),
            (r#"{"n": 1}"#, true),
            (r#"{"list": [[3]]}"#, true),
            (r#"{"user": {"id": 8}}"#, false),
            (r#"{"user": {"tags": ["c"]}}"#, false),
            (r#"{"missing": null}"#, false),
            (r#"{"user": 7}"#, false),
        ] {
            assert_eq!(json_contains(doc, pattern), expected, "{pattern}");
        }
        // An array contains a scalar only at the top level.
        assert!(json_contains("[1, 2]", "2"));
        assert!(!json_contains(r#"{"a": [1, 2]}"#, r#"{"a": 2}"#));
        assert!(!json_contains("not json", "{}"));
        // Strings compare once unescaped; a string is never a number.
        assert!(json_contains(r#"{"s": "A"}"#, r#"{"s": "\u0041"}"#));
        assert!(!json_contains(r#"{"s": "1"}"#, r#"{"s": 1}"#));
    }

    #[test]
    fn args_print_every_digit_indented_or_as_stored() {
        let args = JobArgs::from_text(
            r#"{"b": [1, {"c": -98765432109876543210.5}], "a": "x\"y", "e": []}"#.into(),
        )
        .unwrap();
        assert_eq!(
            args.pretty(),
            "{\n  \"a\": \"x\\\"y\",\n  \"b\": [\n    1,\n    {\n      \"c\": -98765432109876543210.5\n    }\n  ],\n  \"e\": []\n}"
        );
        let served = serde_json::to_string(&args).unwrap();
        assert!(served.contains("-98765432109876543210.5"), "{served}");
        assert!(JobArgs::from_text("{".into()).is_err());
    }

    #[test]
    fn numbers_compare_exactly_by_value() {
        let big = r#"{"big": 12345678901234567890123}"#;
        assert!(json_contains(big, r#"{"big": 12345678901234567890123}"#));
        assert!(!json_contains(big, r#"{"big": 12345678901234567890124}"#));
        // Past 2^53, where f64 would call these equal.
        assert!(!json_contains(
            r#"{"n": 9007199254740993}"#,
            r#"{"n": 9007199254740992}"#
        ));
        for same in ["1", "1.0", "10e-1", "0.1e1", "1.000E0", "100e-2"] {
            assert!(
                json_contains(r#"{"n": 1}"#, &format!(r#"{{"n": {same}}}"#)),
                "{same}"
            );
        }
        assert!(json_contains(r#"{"n": 0}"#, r#"{"n": -0.0}"#));
        assert!(!json_contains(r#"{"n": -1}"#, r#"{"n": 1}"#));
        assert!(json_contains(r#"{"n": 1500}"#, r#"{"n": 1.5e3}"#));
        assert!(!json_contains(r#"{"n": 1500}"#, r#"{"n": 1.5e2}"#));
    }
}
