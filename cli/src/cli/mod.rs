//! The `bazar` command line: its arguments, what each command does, and how
//! outcomes become output and exit codes.
//!
//! Output is a human table by default and raw JSON with `--json` (one
//! compact document per line, for `jq` and scripts). Reads add one dim line
//! saying who served them, from which cache state, at which log index.
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | the server refused or failed the request (`error: <detail> (<code>, HTTP <status>)` on stderr; with `--json` the problem document on stdout too) |
//! | 2 | usage error: bad arguments, caught by clap or by the validators before sending |
//! | 3 | the server could not be reached or did not answer in time |
//!
//! A buy always carries an `Idempotency-Key` (a random one unless `--key` is
//! given) and prints it when the outcome is unknown, so that the one true
//! outcome can be learnt by running the same buy again with that key.

pub mod cluster;
pub mod render;
pub mod token;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bazar_api::{BookPatch, Consistency, NewBook, NodeHealth, OrderFilter};
use clap::{ArgGroup, Args, Parser, Subcommand};
use futures::StreamExt;
use serde::Serialize;

pub use crate::values::{ConsistencyArg, GroupArg};
use bazar_client::client::{Client, ReadMeta};
use bazar_client::error::{ClientError, TransportKind};

/// Where the CLI looks for a frontend when told nothing.
pub const DEFAULT_FRONTEND: &str = "http://127.0.0.1:8080";

const AFTER_HELP: &str = "\
Examples:
  bazar search \"distributed systems\"
  bazar lookup 3 --consistency linearizable
  bazar buy 3 --quantity 2 --key order-2024-001
  bazar --json orders --book 3 | jq '.orders[].total_cents'
  bazar --frontend 127.0.0.1:7101 cluster status
  bazar cluster add-node 4 10.0.0.4:7101
  bazar cluster remove-node 3

Pointed at a raft node instead of a frontend, writes are re-sent to the
group's leader automatically.

Exit codes: 0 done, 1 refused or failed by the server, 2 usage error,
3 server unreachable or too slow.";

/// Command-line client for the Bazar bookstore.
#[derive(Debug, Parser)]
#[command(name = "bazar", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Frontend (or raft node) to talk to, as a URL or host:port.
    #[arg(
        long,
        short = 'f',
        global = true,
        env = "BAZAR_FRONTEND",
        hide_env_values = true,
        default_value = DEFAULT_FRONTEND,
        value_name = "URL"
    )]
    pub frontend: String,

    /// Admin token for add-book, restock, set-price, update and digest
    /// [default: BAZAR_ADMIN_TOKEN from DIR/tokens.env of --data, if present]
    #[arg(long, global = true, env = "BAZAR_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Data folder of a local cluster, where scripts/cluster.sh writes tokens.env.
    #[arg(
        long,
        global = true,
        env = "BAZAR_DATA",
        hide_env_values = true,
        default_value = "./data",
        value_name = "DIR"
    )]
    pub data: PathBuf,

    /// Trust this CA (PEM) for an https:// --frontend: the CA of a cluster
    /// run with --tls-ca.
    #[arg(long, global = true, env = "BAZAR_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,

    /// Print raw JSON instead of tables (one document per line).
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds to wait for each answer.
    #[arg(
        long,
        global = true,
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Search books by topic (case-insensitive).
    Search {
        /// Topic, e.g. "distributed systems".
        topic: String,
        /// Paging (`--limit`, `--cursor`).
        #[command(flatten)]
        page: PageArgs,
        /// Consistency of the read.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Show one book.
    Lookup {
        /// Book id.
        id: u64,
        /// Consistency of the read.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Buy copies of a book.
    ///
    /// Every buy carries an idempotency key: the one given with --key, or a
    /// random one. If the outcome is unknown (timeout, lost connection, no
    /// quorum) the key is printed: buying again with the same key returns the
    /// one true outcome and never buys twice.
    Buy {
        /// Book id.
        id: u64,
        /// Copies to buy.
        #[arg(long, short = 'q', default_value_t = 1, value_name = "N")]
        quantity: u64,
        /// Idempotency key (1 to 128 visible ASCII characters).
        #[arg(long, short = 'k', value_name = "KEY")]
        key: Option<String>,
        /// Buy as this buyer (1 to 64 letters, digits, '.', '_', '-'); the
        /// order is listed by `orders --buyer NAME`.
        #[arg(long = "as", value_name = "NAME")]
        buyer: Option<String>,
    },
    /// List orders, oldest first.
    Orders {
        /// Only the orders of this book.
        #[arg(long, value_name = "ID", conflicts_with = "buyer")]
        book: Option<u64>,
        /// Only the orders of this buyer.
        #[arg(long, value_name = "NAME")]
        buyer: Option<String>,
        /// Paging (`--limit`, `--cursor`).
        #[command(flatten)]
        page: PageArgs,
        /// Consistency of the read.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Show one order.
    Order {
        /// Order id.
        id: u64,
        /// Consistency of the read.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add copies of a book to its stock (admin).
    Restock {
        /// Book id.
        id: u64,
        /// Copies to add.
        quantity: u64,
    },
    /// Set a book's price (admin).
    SetPrice {
        /// Book id.
        id: u64,
        /// New price in cents (1999 is $19.99).
        cents: u64,
    },
    /// Change a book's title, topic and/or price (admin).
    Update(UpdateArgs),
    /// Add a book to the catalog (admin); the catalog assigns its id.
    AddBook(AddBookArgs),
    /// The cluster: status, adding and removing nodes, leadership, snapshots.
    Cluster(cluster::ClusterArgs),
    /// Check that the server answers.
    Health,
    /// Show a hash of a group's state on one node, to compare replicas
    /// (admin; point --frontend at a node).
    Digest {
        /// Which group.
        #[arg(value_enum)]
        group: GroupArg,
    },
    /// Follow a node's change-event stream (point --frontend at a node).
    Watch {
        /// Which group.
        #[arg(value_enum)]
        group: GroupArg,
        /// Start after this log index.
        #[arg(long, default_value_t = 0, value_name = "INDEX")]
        from: u64,
    },
    /// Print the server's Prometheus metrics.
    Metrics,
    /// Save a consistent backup of both groups to FILE (admin).
    ///
    /// The orders leader (found through --frontend) streams both groups'
    /// state with their applied log indexes and digests; the file is written
    /// to FILE.partial, checked whole (SHA-256, manifest), then renamed. A
    /// new cluster starts from it with `bazar-node --restore FILE`; see
    /// `bazar restore`.
    Backup {
        /// Where to write the backup.
        file: std::path::PathBuf,
        /// Give up retrying through elections after this many seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        wait: u64,
    },
    /// Check a backup file and show what it holds, before seeding a new
    /// cluster from it.
    ///
    /// Refuses (exit 1) a file that is truncated, corrupted or not a backup.
    /// To seed a new cluster, start each of its founding members, with an
    /// empty data directory, with `--restore FILE` and the same
    /// `--initial-cluster` (scripts/cluster.sh: BAZAR_RESTORE=FILE
    /// scripts/cluster.sh up). Reads only the file; talks to no server.
    Restore {
        /// The backup to check.
        file: std::path::PathBuf,
    },
    /// Load test: closed-loop clients, latency percentiles, JSON and plots.
    ///
    /// N concurrent clients each send a request, wait for its answer and send
    /// the next, over keep-alive connections, for --duration or --requests
    /// after a --warmup. Reports throughput and p50/p90/p99/p99.9/max latency
    /// of successful requests (failures are counted by kind, apart), per
    /// operation and per level of --clients. The same loop drives etcd's
    /// HTTP/JSON gateway and plain GETs, for side-by-side baselines.
    Bench(Box<crate::bench::BenchArgs>),
    /// Start a local lab cluster for learning and teaching: raft nodes, a
    /// frontend with the storefront and the Raft lab, and fault buttons.
    ///
    /// Runs `bazar-lab` (built with the other binaries, found next to
    /// `bazar`) with the given arguments, e.g. `bazar lab --nodes 5`; see
    /// `bazar lab --help`.
    Lab {
        /// Arguments for bazar-lab.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

/// Paging of listings.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Most results to show (1 to 1000) [default: the server's, 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Where to continue, as printed after the previous page.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
}

/// Freshness of reads.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// How fresh the answer must be [default: the server's, cached on a frontend].
    #[arg(long, short = 'c', value_enum, value_name = "LEVEL")]
    pub consistency: Option<ConsistencyArg>,
}

/// `update` arguments: at least one change.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)))]
pub struct UpdateArgs {
    /// Book id.
    pub id: u64,
    /// New title.
    #[arg(long, group = "change")]
    pub title: Option<String>,
    /// New topic.
    #[arg(long, group = "change")]
    pub topic: Option<String>,
    /// New price in cents.
    #[arg(long, group = "change", value_name = "CENTS")]
    pub price: Option<u64>,
}

/// `add-book` arguments.
#[derive(Debug, Args)]
pub struct AddBookArgs {
    /// ISBN-13, hyphens allowed (e.g. 978-0-306-40615-7).
    #[arg(long)]
    pub isbn: String,
    /// Title.
    #[arg(long)]
    pub title: String,
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Price in cents (1999 is $19.99).
    #[arg(long, value_name = "CENTS")]
    pub price: u64,
    /// Copies in stock.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stock: u64,
}

impl ReadArgs {
    fn level(&self) -> Option<Consistency> {
        self.consistency.map(Into::into)
    }
}

impl Cli {
    /// The client these arguments describe: address, timeout and the admin
    /// token found by [`token::resolve_admin_token`].
    pub fn client(&self) -> Result<Client, ClientError> {
        let mut builder =
            Client::builder(&self.frontend).timeout(Duration::from_secs(self.timeout)).ca_file(self.ca.clone());
        if let Some(token) = token::resolve_admin_token(self.token.as_deref(), &self.data) {
            builder = builder.admin_token(token);
        }
        builder.build()
    }
}

/// The runtime a command needs: a benchmark spreads its clients over every
/// CPU (or `--threads`); anything else is one request at a time, and a
/// single-threaded runtime starts faster.
pub fn runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    match &cli.command {
        Command::Bench(args) if args.action.is_none() => {
            let threads = args
                .run
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get));
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()
        }
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    }
}

/// Runs one command and returns the process exit code (see the module docs).
pub async fn run(cli: Cli) -> ExitCode {
    let out = Output::new(cli.json);
    if let Command::Bench(args) = &cli.command {
        return bench(args, &cli, &out).await;
    }
    if let Command::Lab { args } = &cli.command {
        return lab(args);
    }
    let client = match cli.client() {
        Ok(client) => client,
        Err(error) => return Failure::from(error).report(&out, &cli, None),
    };
    match execute(&cli.command, &client, &out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(&out, &cli, Some(&client)),
    }
}

/// `bazar bench`: runs it (or merges, or plots) and prints the report, as a
/// table or, with `--json`, as one JSON document.
async fn bench(args: &crate::bench::BenchArgs, cli: &Cli, out: &Output) -> ExitCode {
    let conn = crate::bench::Connection {
        frontend: cli.frontend.clone(),
        admin_token: token::resolve_admin_token(cli.token.as_deref(), &cli.data),
        timeout: Duration::from_secs(cli.timeout),
    };
    match crate::bench::execute(args, &conn, cli.json).await {
        Ok(Some(report)) => {
            out.value_or(&report, || report.table());
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => Failure::from(error).report(out, cli, None),
    }
}

/// A failed command: the error and, when we know better than the error, a
/// hint on what to do next.
#[derive(Debug)]
struct Failure {
    error: ClientError,
    hint: Option<String>,
    /// The exit code, when not the error's own (see [`exit_code`]).
    code: Option<u8>,
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure { error, hint: None, code: None }
    }
}

impl Failure {
    fn report(self, out: &Output, cli: &Cli, client: Option<&Client>) -> ExitCode {
        let Failure { error, hint, code } = self;
        if let (true, Some(problem)) = (out.json, error.problem()) {
            out.json(problem);
        }
        let line = match &error {
            ClientError::Problem(p) => format!("{} ({}, HTTP {})", p.detail, p.code, p.status),
            other => other.to_string(),
        };
        eprintln!("error: {line}");
        if let Some(hint) = hint.or_else(|| default_hint(&error, cli, client)) {
            eprintln!("hint: {hint}");
        }
        ExitCode::from(code.unwrap_or_else(|| exit_code(&error)))
    }
}

/// The exit code of a failure: 1 server said no, 2 usage, 3 unreachable.
pub fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::Invalid(_) => 2,
        ClientError::Transport { .. } => 3,
        ClientError::Problem(_) | ClientError::Status { .. } | ClientError::Decode(_) => 1,
    }
}

fn default_hint(error: &ClientError, cli: &Cli, client: Option<&Client>) -> Option<String> {
    use bazar_api::ErrorCode;
    let base = client.map_or(cli.frontend.as_str(), Client::base_url);
    match error {
        ClientError::Transport { kind: TransportKind::Connect, .. } => Some(format!(
            "is Bazar running at {base}? (scripts/cluster.sh up starts a local cluster; \
             --frontend or BAZAR_FRONTEND point elsewhere)"
        )),
        ClientError::Problem(p) => match p.code {
            ErrorCode::Unauthorized if !client.is_some_and(Client::has_admin_token) => Some(format!(
                "admin commands need a token: --token, BAZAR_ADMIN_TOKEN, or {}",
                cli.data.join(token::TOKENS_FILE).display()
            )),
            ErrorCode::Unauthorized => Some("the admin token was refused".into()),
            ErrorCode::Unavailable => Some(match p.retry_after {
                Some(secs) => format!("no leader or quorum right now; retry in {secs} s"),
                None => "no leader or quorum right now; retry shortly".into(),
            }),
            ErrorCode::NotLeader => Some("the group is electing a leader; retry shortly".into()),
            _ => None,
        },
        ClientError::Status { status: 404, .. } => {
            Some(format!("{base} does not serve this route; is it a node or a frontend?"))
        }
        _ => None,
    }
}

async fn execute(command: &Command, client: &Client, out: &Output) -> Result<(), Failure> {
    match command {
        Command::Search { topic, page, read } => {
            let res = client.search(topic, page.limit, page.cursor.as_deref(), read.level()).await?;
            if out.json {
                out.json(&res.value);
            } else if res.value.books.is_empty() {
                out.text(&format!("no books under topic {topic:?}\n"));
            } else {
                out.text(&render::books_table(&res.value.books));
            }
            out.next_cursor(res.value.next_cursor.as_deref());
            out.meta(&res.meta);
        }
        Command::Lookup { id, read } => {
            let res = client.lookup(*id, read.level()).await?;
            out.value_or(&res.value, || render::books_table(std::slice::from_ref(&res.value)));
            out.meta(&res.meta);
        }
        Command::Buy { id, quantity, key, buyer } => {
            let key = key.clone().unwrap_or_else(random_idempotency_key);
            match client.buy_as(*id, *quantity, buyer.as_deref(), Some(&key)).await {
                Ok(order) => {
                    out.value_or(&order, || render::order_summary(&order));
                    out.note(&format!("idempotency key {key}"));
                }
                Err(error) if error.outcome_unknown() => {
                    return Err(Failure {
                        error,
                        hint: Some(format!(
                            "the buy may or may not have happened; run it again with \
                             --key {key} to learn its outcome (it will not buy twice)"
                        )),
                        code: None,
                    });
                }
                Err(error) => return Err(error.into()),
            }
        }
        Command::Orders { book, buyer, page, read } => {
            let which = match (book, buyer) {
                (Some(book), _) => OrderFilter::Book(*book),
                (None, Some(buyer)) => OrderFilter::Buyer(buyer.clone()),
                (None, None) => OrderFilter::All,
            };
            let res = client.orders(&which, page.limit, page.cursor.as_deref(), read.level()).await?;
            if out.json {
                out.json(&res.value);
            } else if res.value.orders.is_empty() {
                out.text("no orders\n");
            } else {
                out.text(&render::orders_table(&res.value.orders));
            }
            out.next_cursor(res.value.next_cursor.as_deref());
            out.meta(&res.meta);
        }
        Command::Order { id, read } => {
            let res = client.order(*id, read.level()).await?;
            out.value_or(&res.value, || render::orders_table(std::slice::from_ref(&res.value)));
            out.meta(&res.meta);
        }
        Command::Restock { id, quantity } => {
            let book = client.restock(*id, *quantity).await?;
            out.book(&book);
        }
        Command::SetPrice { id, cents } => {
            let book = client.set_price(*id, *cents).await?;
            out.book(&book);
        }
        Command::Update(args) => {
            let patch = BookPatch { price_cents: args.price, title: args.title.clone(), topic: args.topic.clone() };
            let book = client.update_book(args.id, patch).await?;
            out.book(&book);
        }
        Command::AddBook(args) => {
            let new = NewBook {
                isbn: args.isbn.clone(),
                title: args.title.clone(),
                topic: args.topic.clone(),
                price_cents: args.price,
                stock: args.stock,
            };
            let book = client.add_book(new).await?;
            out.book(&book);
        }
        Command::Cluster(args) => cluster::execute(args, client, out).await?,
        Command::Health => {
            let value = client.health().await?;
            match (&value, serde_json::from_value::<NodeHealth>(value.clone())) {
                _ if out.json => out.json(&value),
                (_, Ok(health)) => out.text(&render::node_health(&health)),
                (serde_json::Value::String(text), _) => out.text(&format!("{}\n", text.trim())),
                _ => out.text(&pretty(&value)),
            }
        }
        Command::Digest { group } => {
            let digest = client.digest((*group).into()).await?;
            out.value_or(&digest, || render::digests_table(std::slice::from_ref(&digest)));
        }
        Command::Watch { group, from } => {
            let mut events = client.watch((*group).into(), *from).await?;
            while let Some(event) = events.next().await {
                let event = event?;
                let written = if out.json {
                    out.try_json(&event)
                } else {
                    out.try_text(&format!("{}\n", render::watch_event(&event)))
                };
                if !written {
                    // stdout closed (e.g. `| head`): the reader is done.
                    return Ok(());
                }
            }
            return Err(ClientError::Transport {
                kind: TransportKind::Broken,
                detail: "the change stream ended".into(),
            }
            .into());
        }
        Command::Metrics => {
            let text = client.metrics().await?;
            out.text(&text);
        }
        Command::Backup { file, wait } => {
            let started = std::time::Instant::now();
            let admin = bazar_client::cluster::ClusterAdmin::new(client.clone(), vec![client.base_url().to_string()]);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(*wait);
            let mut progress =
                |p: &bazar_client::cluster::Progress| eprintln!("[{:6.1}s] {p}", started.elapsed().as_secs_f64());
            let manifest = admin.backup(file, deadline, &mut progress).await?;
            out.value_or(&manifest, || render::backup_manifest(&manifest, file));
        }
        Command::Restore { file } => {
            let checked = file.clone();
            let opened = tokio::task::spawn_blocking(move || {
                let mut f = std::fs::File::open(&checked)?;
                Ok::<_, std::io::Error>(bazar_api::backup::verify(&mut f))
            })
            .await
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
            // A file that cannot be read is a usage error (2); one that is
            // not a whole, sound backup is refused (1).
            let checked = opened.map_err(|e| Failure {
                error: ClientError::Invalid(format!("cannot read {}: {e}", file.display())),
                hint: Some("check the path of the backup file".into()),
                code: None,
            })?;
            let manifest = checked.map_err(|e| Failure {
                error: ClientError::Invalid(format!("{}: {e}", file.display())),
                hint: Some("take a new backup with `bazar backup FILE`; a damaged file cannot be used".into()),
                code: Some(1),
            })?;
            out.value_or(&manifest, || {
                format!(
                    "{}\nThe backup checks out. To seed a new cluster from it, start each founding member with an \
                     empty data directory and `--restore {}` (same --initial-cluster on every member), e.g.\n  \
                     BAZAR_RESTORE={} scripts/cluster.sh up\n",
                    render::backup_manifest(&manifest, file),
                    file.display(),
                    file.display()
                )
            });
        }
        // Handled by `bench` and `lab` before a client is built.
        Command::Bench(_) => unreachable!("bench runs apart"),
        Command::Lab { .. } => unreachable!("lab runs apart"),
    }
    Ok(())
}

/// `bazar lab`: becomes `bazar-lab` (the lab supervisor lives with the
/// process harness of the tests crate, which the client must not depend
/// on), so that Ctrl-C reaches it directly. `bazar lab ARGS...` is handed
/// over before the CLI's own parsing, so that every argument (`--help`,
/// `--frontend`) is bazar-lab's.
pub fn lab(args: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("bazar-lab")))
        .filter(|p| p.is_file());
    let Some(program) = program else {
        eprintln!("error: bazar-lab was not found next to bazar: build it with `cargo build --release --bins`");
        return ExitCode::from(3);
    };
    let error = std::process::Command::new(&program).args(args).exec();
    eprintln!("error: cannot run {}: {error}", program.display());
    ExitCode::from(3)
}

/// A fresh idempotency key for a buy that was given none.
fn random_idempotency_key() -> String {
    format!("bazar-cli-{:016x}", rand::random::<u64>())
}

fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// Where results go: stdout, as tables or JSON.
///
/// Write errors are ignored on purpose: the only likely one is a closed pipe
/// (`bazar orders | head`), and by then the reader has what it wanted.
struct Output {
    json: bool,
    color: bool,
}

impl Output {
    fn new(json: bool) -> Output {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output { json, color }
    }

    fn try_text(&self, text: &str) -> bool {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).is_ok()
    }

    fn text(&self, text: &str) {
        self.try_text(text);
    }

    fn try_json<T: Serialize + ?Sized>(&self, value: &T) -> bool {
        match serde_json::to_string(value) {
            Ok(mut line) => {
                line.push('\n');
                self.try_text(&line)
            }
            Err(_) => false,
        }
    }

    fn json<T: Serialize + ?Sized>(&self, value: &T) {
        self.try_json(value);
    }

    /// JSON in `--json` mode, else the rendered text.
    fn value_or<T: Serialize>(&self, value: &T, render: impl FnOnce() -> String) {
        if self.json {
            self.json(value);
        } else {
            self.text(&render());
        }
    }

    fn book(&self, book: &bazar_api::Book) {
        self.value_or(book, || render::books_table(std::slice::from_ref(book)));
    }

    /// A dim line for humans; nothing in `--json` mode.
    fn note(&self, note: &str) {
        if self.json {
            return;
        }
        if self.color {
            self.text(&format!("\x1b[2m{note}\x1b[0m\n"));
        } else {
            self.text(&format!("{note}\n"));
        }
    }

    fn meta(&self, meta: &ReadMeta) {
        self.note(&meta.to_string());
    }

    fn next_cursor(&self, cursor: Option<&str>) {
        if let Some(cursor) = cursor {
            self.note(&format!("more: --cursor {cursor}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn argument_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_parse_before_and_after_the_command() {
        let cli = Cli::try_parse_from(["bazar", "--json", "buy", "3", "-q", "2", "--frontend", "h:1", "--key", "k1"])
            .unwrap();
        assert!(cli.json);
        assert_eq!(cli.frontend, "h:1");
        assert!(matches!(cli.command, Command::Buy { id: 3, quantity: 2, key: Some(ref k), buyer: None } if k == "k1"));
    }

    #[test]
    fn buy_as_and_orders_by_buyer_parse() {
        let cli = Cli::try_parse_from(["bazar", "buy", "3", "--as", "manar"]).unwrap();
        assert!(matches!(cli.command, Command::Buy { id: 3, buyer: Some(ref b), .. } if b == "manar"));
        let cli = Cli::try_parse_from(["bazar", "orders", "--buyer", "manar"]).unwrap();
        assert!(matches!(cli.command, Command::Orders { book: None, buyer: Some(ref b), .. } if b == "manar"));
        assert!(Cli::try_parse_from(["bazar", "orders", "--buyer", "manar", "--book", "2"]).is_err());
    }

    #[test]
    fn update_without_changes_is_a_usage_error() {
        let err = Cli::try_parse_from(["bazar", "update", "3"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(Cli::try_parse_from(["bazar", "update", "3", "--price", "1999"]).is_ok());
    }

    #[test]
    fn consistency_and_group_values_are_checked() {
        let cli = Cli::try_parse_from(["bazar", "lookup", "1", "--consistency", "linearizable"]).unwrap();
        let Command::Lookup { read, .. } = cli.command else { panic!("not lookup") };
        assert_eq!(read.level(), Some(Consistency::Linearizable));
        assert!(Cli::try_parse_from(["bazar", "lookup", "1", "-c", "eventual"]).is_err());
        assert!(Cli::try_parse_from(["bazar", "digest", "payments"]).is_err());
    }

    #[test]
    fn failures_map_to_documented_exit_codes() {
        let problem = bazar_api::Problem::new(bazar_api::ErrorCode::NotFound, "no book 9");
        assert_eq!(exit_code(&ClientError::Problem(Box::new(problem))), 1);
        assert_eq!(exit_code(&ClientError::Invalid("quantity".into())), 2);
        assert_eq!(exit_code(&ClientError::timeout("slow")), 3);
    }

    #[test]
    fn generated_idempotency_keys_are_valid_and_distinct() {
        let a = random_idempotency_key();
        assert!(bazar_api::model::validate_idempotency_key(&a).is_ok());
        assert_ne!(a, random_idempotency_key());
    }
}
