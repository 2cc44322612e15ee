//! The `bazar` binary against small in-process HTTP servers that play a
//! frontend or a node (the client's test servers, included by path): its
//! tables, JSON mode, problems and exit codes, and the token file.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bazar_client::Book;

#[path = "../../client/tests/support/mod.rs"]
mod support;
use support::{follower_app, leader_app, reads_app, serve};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `bazar` with a clean environment: no token file, no variables.
async fn bazar(args: &[&str]) -> Run {
    let data = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bazar"))
        .args(args)
        .env("BAZAR_DATA", data.path())
        .env_remove("BAZAR_FRONTEND")
        .env_remove("BAZAR_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test]
async fn cli_prints_tables_with_dollars_and_read_metadata() {
    let addr = serve(reads_app()).await;

    let run = bazar(&["--frontend", &addr, "lookup", "1"]).await;

    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("ID  ISBN"), "{}", run.stdout);
    assert!(run.stdout.contains("$19.99"), "{}", run.stdout);
    assert!(run.stdout.contains("served by 2, cache miss, index 41"), "{}", run.stdout);
}

#[tokio::test]
async fn cli_json_mode_prints_the_raw_document() {
    let addr = serve(reads_app()).await;

    let run = bazar(&["--json", "--frontend", &format!("http://{addr}/"), "lookup", "1"]).await;

    assert_eq!(run.code, 0, "{}", run.stderr);
    let book: Book = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(book.price_cents, 1999);
}

#[tokio::test]
async fn cli_reports_problems_on_stderr_with_exit_code_1() {
    let addr = serve(reads_app()).await;

    let run = bazar(&["--frontend", &addr, "lookup", "9"]).await;

    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().next(), Some("error: no book 9 (not_found, HTTP 404)"));
    assert!(run.stdout.is_empty());
}

#[tokio::test]
async fn cli_exits_3_when_the_server_is_unreachable_and_2_on_bad_input() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);

    let run = bazar(&["--frontend", &addr, "search", "x"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("hint: is Bazar running"), "{}", run.stderr);

    let run = bazar(&["--frontend", &addr, "buy", "1", "--quantity", "0"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("quantity must be at least 1"), "{}", run.stderr);
}

#[tokio::test]
async fn cli_buy_through_a_follower_uses_the_token_file() {
    let leader = serve(leader_app()).await;
    let follower = serve(follower_app(leader, Arc::new(AtomicUsize::new(0)))).await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("tokens.env"), "BAZAR_ADMIN_TOKEN=s3cret\n").unwrap();

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bazar"))
        .args(["--frontend", &follower, "buy", "4", "-q", "3", "-k", "abc"])
        .env("BAZAR_DATA", data.path())
        .env_remove("BAZAR_ADMIN_TOKEN")
        .env_remove("BAZAR_FRONTEND")
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.starts_with("order 7 confirmed: 3 copies of book 4 at $19.99 = $59.97"), "{stdout}");
    assert!(stdout.contains("idempotency key abc"), "{stdout}");
}
