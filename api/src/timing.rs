//! `Server-Timing`: where an answer's time went.
//!
//! Every answer of a node or a frontend carries the standard header
//! (W3C Server Timing), one metric per tier or step, durations in
//! milliseconds:
//!
//! ```text
//! Server-Timing: frontend;dur=4.630, node;dur=4.210, raft;desc="orders commit";dur=3.902
//! ```
//!
//! - `frontend`: the frontend's whole handling of the request;
//! - `cache;desc="hit"`: a lookup answered from the frontend's cache;
//! - `node`: the node's whole handling (relayed by the frontend);
//! - `raft;desc="..."`: a Raft step the node waited for: a commit in a
//!   group, a commit through the leader, a read-index round, a lease read,
//!   a wait for `min_index`. Steps that overlap (a buy proposes to both
//!   groups) are listed apart, so they may add up to more than `node`.
//!
//! [`parse`] reads the header back, for clients and `bazar bench`.

use std::time::Duration;

/// The response header.
pub const SERVER_TIMING_HEADER: &str = "server-timing";

/// One metric of a `Server-Timing` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimingEntry {
    /// The tier or step (`frontend`, `node`, `cache`, `raft`).
    pub name: String,
    /// What it was, when the metric says (`orders commit`, `hit`).
    pub desc: Option<String>,
    /// How long, when the metric says.
    pub dur: Option<Duration>,
}

impl TimingEntry {
    /// The name, with the description when there is one: `raft orders commit`.
    pub fn label(&self) -> String {
        match &self.desc {
            Some(desc) => format!("{} {desc}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The metrics of one `Server-Timing` header value (a header sent several
/// times is read by parsing each value in turn). Metrics that cannot be
/// read (no name, a duration that is not a number) are skipped, as the
/// standard asks of user agents; parameters other than `desc` and `dur`
/// are ignored.
pub fn parse(value: &str) -> Vec<TimingEntry> {
    split_outside_quotes(value, b',').into_iter().filter_map(parse_metric).collect()
}

fn parse_metric(metric: &str) -> Option<TimingEntry> {
    let mut parts = split_outside_quotes(metric, b';').into_iter();
    let name = parts.next()?.trim().to_string();
    if name.is_empty() || !name.chars().all(is_token_char) {
        return None;
    }
    let mut entry = TimingEntry { name, desc: None, dur: None };
    for param in parts {
        let Some((key, value)) = param.split_once('=') else { continue };
        let value = unquote(value.trim());
        match key.trim().to_ascii_lowercase().as_str() {
            "desc" if entry.desc.is_none() => entry.desc = Some(value),
            "dur" if entry.dur.is_none() => {
                let ms: f64 = value.parse().ok()?;
                if !ms.is_finite() || ms < 0.0 {
                    return None;
                }
                entry.dur = Some(Duration::from_secs_f64(ms / 1000.0));
            }
            _ => {}
        }
    }
    Some(entry)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// `s` cut at every `sep` that is not inside a quoted string, as slices of
/// it (this runs for every answer a client reads: no copies).
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    // Bytes are safe here: the separators, quotes and backslashes are ASCII,
    // which never occurs inside a multi-byte UTF-8 character.
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A parameter value: a quoted string without its quotes and escapes, or
/// a token as it is.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, desc: Option<&str>, ms: Option<f64>) -> TimingEntry {
        TimingEntry {
            name: name.into(),
            desc: desc.map(Into::into),
            dur: ms.map(|ms| Duration::from_secs_f64(ms / 1000.0)),
        }
    }

    #[test]
    fn a_buy_through_a_frontend_reads_as_its_tiers_and_steps() {
        let value = r#"frontend;dur=4.630, node;dur=4.210, raft;desc="orders commit";dur=3.902, raft;desc="catalog commit";dur=3.655"#;
        assert_eq!(
            parse(value),
            vec![
                entry("frontend", None, Some(4.63)),
                entry("node", None, Some(4.21)),
                entry("raft", Some("orders commit"), Some(3.902)),
                entry("raft", Some("catalog commit"), Some(3.655)),
            ]
        );
        assert_eq!(parse(value)[2].label(), "raft orders commit");
    }

    #[test]
    fn quotes_protect_separators_and_escapes_are_undone() {
        let parsed = parse(r#"cache;desc="a, b; c \"d\"";dur=0.5,miss"#);
        assert_eq!(parsed, vec![entry("cache", Some(r#"a, b; c "d""#), Some(0.5)), entry("miss", None, None)]);
        assert_eq!(
            parse(r#"raft;desc="é, ü";dur=1,node"#),
            vec![entry("raft", Some("é, ü"), Some(1.0)), entry("node", None, None)]
        );
    }

    #[test]
    fn unreadable_metrics_are_skipped_and_the_rest_kept() {
        assert_eq!(parse("node;dur=abc, frontend;dur=1"), vec![entry("frontend", None, Some(1.0))]);
        assert_eq!(parse(" ;dur=1, a b;dur=2, node;dur=-1, ok"), vec![entry("ok", None, None)]);
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse("node;DUR=2;dur=3;extra=x"), vec![entry("node", None, Some(2.0))], "the first dur counts");
    }
}
