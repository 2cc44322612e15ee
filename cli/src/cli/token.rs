//! Finding the admin token.
//!
//! In order: the `--token` flag, the `BAZAR_ADMIN_TOKEN` variable (clap reads
//! both), then the `BAZAR_ADMIN_TOKEN=...` line of `<data>/tokens.env`, the
//! file `scripts/cluster.sh` writes when it generates tokens. The file is
//! read the way a shell would source it (comments, `export`, quotes), so one
//! file serves both the scripts and this tool.

use std::io;
use std::path::Path;

/// Name of the file, inside the data folder, holding generated tokens.
pub const TOKENS_FILE: &str = "tokens.env";
/// Variable naming the admin token, in the environment and in the file.
pub const ADMIN_TOKEN_VAR: &str = "BAZAR_ADMIN_TOKEN";

/// The admin token to use: `explicit` (flag or environment) when non-empty,
/// else the one in `<data_dir>/tokens.env`, if any.
///
/// A tokens file that exists but cannot be read is reported on stderr rather
/// than failing: most commands need no token at all.
pub fn resolve_admin_token(explicit: Option<&str>, data_dir: &Path) -> Option<String> {
    if let Some(token) = explicit.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(token.to_string());
    }
    let path = data_dir.join(TOKENS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_env_file(&text, ADMIN_TOKEN_VAR),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("warning: cannot read {}: {e}", path.display());
            None
        }
    }
}

/// The value of `var` in a shell-style `KEY=VALUE` file; the last assignment
/// wins, as when the file is sourced.
pub fn parse_env_file(text: &str, var: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else { continue };
        if key.trim() != var {
            continue;
        }
        let value = value.trim();
        let value =
            ['"', '\''].iter().find_map(|&q| value.strip_prefix(q).and_then(|v| v.strip_suffix(q))).unwrap_or(value);
        found = (!value.is_empty()).then(|| value.to_string());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_read_from_tokens_env_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TOKENS_FILE),
            "# written by scripts/cluster.sh\nBAZAR_CLUSTER_TOKEN=c1\nexport BAZAR_ADMIN_TOKEN=\"a-123\"\n",
        )
        .unwrap();
        assert_eq!(resolve_admin_token(None, dir.path()).as_deref(), Some("a-123"));
    }

    #[test]
    fn explicit_token_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENS_FILE), "BAZAR_ADMIN_TOKEN=file\n").unwrap();
        assert_eq!(resolve_admin_token(Some("flag"), dir.path()).as_deref(), Some("flag"));
        assert_eq!(resolve_admin_token(Some(""), dir.path()).as_deref(), Some("file"));
    }

    #[test]
    fn missing_tokens_file_means_no_token() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_admin_token(None, dir.path()), None);
    }

    #[test]
    fn env_file_parsing_follows_shell_habits() {
        assert_eq!(parse_env_file("A=1\nA=2\n", "A").as_deref(), Some("2"));
        assert_eq!(parse_env_file("A='x y'", "A").as_deref(), Some("x y"));
        assert_eq!(parse_env_file("AB=1\n#A=2\nnonsense", "A"), None);
        assert_eq!(parse_env_file("A=", "A"), None);
    }
}
