//! `jsonkv`, the command-line tool: one subcommand per call of the client library, values and
//! events printed as one compact JSON line each, errors as one line on stderr.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use jsonkv_client::{
    Client, Entry, Error, ListQuery, Patch, PatchFailure, Precondition, ViewChange, WatchEvent,
    WatchOptions, WatchTarget,
};
use serde::Serialize;
use serde_json::Value;

mod cli {
    //! The subcommands with more to them than one call, and what every subcommand prints.
    pub mod lease;
    pub mod lock;
    pub mod output;
    pub mod txn;
}

use cli::output::{print_line, Exit, RevisionLine};
use cli::{lease, lock, txn};

const EXIT_HELP: &str = "\
Exit status: 0 on success; 1 when the key is not found or on any error; 2 for a usage error;
3 when an --if-absent / --if-mod-revision condition, or a JSON Patch `test`, did not hold.
`jsonkv lock` exits with its command's status.";

/// `jsonkv lock`'s TTL when none is given, as `etcdctl lock`'s.
const LOCK_TTL_SECONDS: i64 = 10;

/// Command-line client for a jsonkv server.
#[derive(Debug, Parser)]
#[command(name = "jsonkv", version, after_help = EXIT_HELP)]
struct Cli {
    /// Server address: http://HOST:PORT, https://HOST:PORT (TLS) or HOST:PORT. Several,
    /// separated by commas (the servers of one cluster): the first that answers is used, and a
    /// call moves on to the next when its server is down.
    #[arg(
        long,
        global = true,
        env = "JSONKV_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,

    /// Bearer token for a server started with --auth-tokens. Prefer the environment variable:
    /// a flag shows in the process list.
    #[arg(long, global = true, env = "JSONKV_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// PEM CA certificate to trust for an https:// address, instead of the system's roots.
    #[arg(long, global = true, env = "JSONKV_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// PEM client certificate, for a server that requires mutual TLS (needs --key).
    #[arg(
        long,
        global = true,
        env = "JSONKV_CERT",
        value_name = "FILE",
        requires = "cert_key"
    )]
    cert: Option<PathBuf>,

    /// The PEM private key of --cert. (Named `cert_key` inside, since subcommands have a KEY.)
    #[arg(
        long = "key",
        global = true,
        env = "JSONKV_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    cert_key: Option<PathBuf>,

    /// Seconds a call may wait for its answer (a watch: for its opening) before it fails with
    /// "deadline exceeded". No limit by default.
    #[arg(long, global = true, env = "JSONKV_TIMEOUT", value_name = "SECONDS", value_parser = parse_timeout)]
    timeout: Option<Duration>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set KEY to a JSON value; prints {"revision":N} ({"revision":N,"lease":ID} with a lease).
    Put {
        key: String,
        /// The value as JSON text, or - to read it from stdin.
        json: String,
        #[command(flatten)]
        condition: Condition,
        /// Attach the key to lease ID: it is deleted when the lease ends.
        #[arg(long, value_name = "ID", conflicts_with = "ttl")]
        lease: Option<i64>,
        /// Grant a lease of SECONDS for the key (nobody keeps it alive: the key goes after
        /// SECONDS, unless `jsonkv lease keepalive` refreshes it).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<i64>,
    },
    /// Change KEY's document on the server with a JSON merge patch (RFC 7396; creates an
    /// absent key) or, with --json-patch, a JSON Patch (RFC 6902); prints
    /// {"revision":N,"value":DOC}, DOC being the document the patch left.
    Patch {
        key: String,
        /// The patch as JSON text, or - to read it from stdin.
        json: String,
        /// JSON is an RFC 6902 JSON Patch, an array of operations applied all or none (a failed
        /// `test` exits 3), rather than a merge patch.
        #[arg(long)]
        json_patch: bool,
        #[command(flatten)]
        condition: Condition,
    },
    /// Run a transaction: read a TxnRequest from stdin in the proto's canonical JSON mapping
    /// (proto3 JSON: {"compare":[{"key":"a","mod_revision":"5"}],"success":[{"insert":{...}}]}),
    /// print its TxnResponse the same way, with the proto's field names.
    Txn,
    /// Print the value of KEY as compact JSON.
    Get {
        key: String,
        #[command(flatten)]
        read: ReadMode,
    },
    /// Delete KEY; prints {"revision":N}.
    Del {
        key: String,
        /// Delete only if the key's mod revision is N.
        #[arg(long, value_name = "N")]
        if_mod_revision: Option<i64>,
    },
    /// Print every key under PREFIX (default: all keys), one JSON line each.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        read: ReadMode,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Print KEY's (or --prefix's) snapshot, then every change, one JSON line each.
    #[command(group = clap::ArgGroup::new("target").required(true))]
    Watch {
        /// The key to watch.
        #[arg(group = "target")]
        key: Option<String>,
        /// Watch every key starting with P instead of one key ("" for all keys).
        #[arg(long, value_name = "P", group = "target")]
        prefix: Option<String>,
        /// Replay changes from revision N (no snapshot) instead of starting with a snapshot.
        #[arg(long, value_name = "N", default_value_t = 0)]
        start_revision: i64,
        /// Print with each put and delete the key as it was before:
        /// "prev":{"value":V,"mod_revision":N}, or "prev":null if it did not exist.
        #[arg(long)]
        prev_kv: bool,
        #[command(flatten)]
        query: QueryArgs,
        /// With --prefix: print with each put of a document that existed before the RFC 7396
        /// merge patch from its previous version, "merge_patch":P (left out where none can say
        /// the change).
        #[arg(long, requires = "prefix")]
        diff: bool,
    },
    /// Print the server's status as one JSON object: revision, keys, store_id, backend,
    /// version, data and disk bytes, history range, open watchers, uptime, live leases.
    Status,
    /// Write a backup of the whole store, consistent at one revision, to FILE (complete or not
    /// at all); prints {"revision":R,"keys":K,"bytes":N}. Needs a write token.
    Backup { file: PathBuf },
    /// Grant, keep alive, revoke and inspect leases.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Run COMMAND while holding the lock NAME, as `etcdctl lock` does: waits for the lock, runs
    /// the command, releases the lock when it ends, and exits with its status. A holder killed
    /// outright releases the lock when its lease's TTL runs out.
    Lock {
        /// Seconds the lock outlives its holder if the holder dies.
        #[arg(long, value_name = "S", default_value_t = LOCK_TTL_SECONDS)]
        ttl: i64,
        name: String,
        /// The command and its arguments, after --.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Campaign in the election NAME with PROPOSAL: prints {"leader":PROPOSAL,...} once this
    /// process leads, and leads until interrupted. With --listen, print each leader instead.
    Elect {
        name: String,
        /// This candidate's value as JSON text (not with --listen).
        #[arg(required_unless_present = "listen")]
        proposal: Option<String>,
        /// Print the leader's key and value each time the leader changes.
        #[arg(long, short, conflicts_with = "proposal")]
        listen: bool,
        /// Seconds the lead outlives its holder if the holder dies.
        #[arg(long, value_name = "S", default_value_t = LOCK_TTL_SECONDS)]
        ttl: i64,
    },
}

#[derive(Debug, Args)]
struct Condition {
    /// Write only if the key does not exist.
    #[arg(long, conflicts_with = "if_mod_revision")]
    if_absent: bool,
    /// Write only if the key's mod revision is N.
    #[arg(long, value_name = "N")]
    if_mod_revision: Option<i64>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// A live query: only the documents for which the CEL expression EXPR is true, such as
    /// 'value.status == "open" && value.total > 100' (`value` is the document, `key` its key).
    /// A watch then prints "view_change":"entered"|"updated"|"left" on each event.
    #[arg(long = "where", value_name = "EXPR")]
    filter: Option<String>,
    /// Print only these members of each value: JSON Pointers (RFC 6901), comma-separated or
    /// repeated, such as --fields /name,/address/city.
    #[arg(long, value_name = "POINTERS", value_delimiter = ',')]
    fields: Vec<String>,
}

#[derive(Debug, Args)]
struct ReadMode {
    /// Read from the source of truth: on a cluster, a linearizable read from etcd rather than
    /// from the server's own view, which may trail it slightly (a single server's reads always
    /// are).
    #[arg(long)]
    linearizable: bool,
}

impl ReadMode {
    /// The client to read through: `client` itself, or its linearizable form.
    fn client(&self, client: &Client) -> Client {
        if self.linearizable {
            client.linearizable()
        } else {
            client.clone()
        }
    }
}

impl Condition {
    fn precondition(&self) -> Option<Precondition> {
        match (self.if_absent, self.if_mod_revision) {
            (true, _) => Some(Precondition::Absent),
            (false, Some(revision)) => Some(Precondition::ModRevision(revision)),
            (false, None) => None,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(line) = exit.line {
                eprintln!("{line}");
            }
            ExitCode::from(exit.code)
        }
    }
}

/// `--timeout`: a positive number of seconds, fractions allowed.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 => {
            Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text} seconds is too long"))
        }
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
}

async fn run(cli: Cli) -> Result<(), Exit> {
    // A bad value is rejected before any connection is made.
    let value = match &cli.command {
        Command::Put { json, .. } | Command::Patch { json, .. } => Some(read_value(json)?),
        Command::Elect {
            proposal: Some(json),
            ..
        } => {
            read_value(json)?;
            None
        }
        _ => None,
    };
    let txn = match &cli.command {
        Command::Txn => Some(txn::parse_request(&read_stdin("the TxnRequest")?)?),
        _ => None,
    };
    let mut builder = Client::builder(cli.addr);
    if let Some(token) = cli.token {
        builder = builder.token(token);
    }
    if let Some(ca) = cli.ca {
        builder = builder.ca_file(ca);
    }
    if let (Some(cert), Some(key)) = (cli.cert, cli.cert_key) {
        builder = builder.identity_files(cert, key);
    }
    if let Some(limit) = cli.timeout {
        builder = builder.timeout(limit);
    }
    let client = builder.connect().await?;
    match cli.command {
        Command::Put {
            key,
            condition,
            lease,
            ttl,
            ..
        } => {
            let value = value.unwrap_or_default();
            let lease = match (lease, ttl) {
                (Some(lease), _) => Some(lease),
                (None, Some(ttl)) => Some(client.lease_grant(ttl, None).await?.id),
                (None, None) => None,
            };
            let precondition = condition.precondition();
            let result = match lease {
                Some(lease) => {
                    client
                        .insert_leased(&key, &value, precondition, lease)
                        .await?
                }
                None => match precondition {
                    Some(precondition) => client.insert_if(&key, &value, precondition).await?,
                    None => client.insert(&key, &value).await?,
                },
            };
            print_line(&PutLine {
                revision: result.revision,
                lease,
            })
        }
        Command::Patch {
            key,
            json_patch,
            condition,
            ..
        } => {
            let value = value.unwrap_or_default();
            let patch = if json_patch {
                Patch::json_patch(&value)
            } else {
                Patch::merge(&value)
            };
            let entry = client
                .patch::<Value>(&key, &patch, condition.precondition())
                .await
                .map_err(patch_exit)?;
            print_line(&PatchLine {
                revision: entry.mod_revision,
                value: &entry.value,
            })
        }
        Command::Txn => txn::run(&client, txn.unwrap_or_default()).await,
        Command::Get { key, read } => match read.client(&client).get::<Value>(&key).await? {
            Some(entry) => print_line(&entry.value),
            None => Err(Exit::not_found(&key)),
        },
        Command::Del {
            key,
            if_mod_revision,
        } => {
            let deleted = match if_mod_revision {
                Some(revision) => {
                    client
                        .delete_if(&key, Precondition::ModRevision(revision))
                        .await?
                }
                None => client.delete(&key).await?,
            };
            match deleted {
                Some(revision) => print_line(&RevisionLine { revision }),
                None => Err(Exit::not_found(&key)),
            }
        }
        Command::List {
            prefix,
            read,
            query,
        } => {
            let query = ListQuery {
                filter: query.filter,
                fields: query.fields,
            };
            list(&read.client(&client), &prefix, &query).await
        }
        Command::Status => print_line(&client.status().await?),
        Command::Backup { file } => print_line(&client.backup(&file).await?),
        Command::Lease(command) => lease::run(&client, command).await,
        Command::Lock { ttl, name, command } => lock::run(&client, ttl, &name, &command).await,
        Command::Elect {
            name,
            proposal,
            listen,
            ttl,
        } => match (listen, proposal) {
            (true, _) => lock::listen(&client, &name).await,
            (false, Some(proposal)) => lock::elect(&client, &name, ttl, &proposal).await,
            // clap's rules leave no other case.
            (false, None) => Err(Exit::error("give a PROPOSAL or --listen")),
        },
        Command::Watch {
            key,
            prefix,
            start_revision,
            prev_kv,
            query,
            diff,
        } => {
            if key.is_some() && (query.filter.is_some() || !query.fields.is_empty()) {
                return Err(Exit::error(
                    "--where and --fields apply to a --prefix watch, not to a key",
                ));
            }
            let target = match (key, prefix) {
                (_, Some(prefix)) => WatchTarget::Prefix(prefix),
                (Some(key), None) => WatchTarget::Key(key),
                // clap's required group rules this out.
                (None, None) => return Err(Exit::error("give a KEY or --prefix")),
            };
            let options = WatchOptions {
                start_revision,
                prev_kv,
                filter: query.filter,
                fields: query.fields,
                diff,
                ..WatchOptions::default()
            };
            watch(&client, target, options).await
        }
    }
}

/// The value argument of `put` and `patch`: JSON text, or `-` for stdin.
fn read_value(json: &str) -> Result<Value, Exit> {
    let text = if json == "-" {
        read_stdin("the value")?
    } else {
        json.to_owned()
    };
    // Lossless: with serde_json's arbitrary_precision every digit is kept.
    jsonkv::value::parse_json_text(&text).map_err(Exit::error)
}

/// All of stdin, which holds `what`.
fn read_stdin(what: &str) -> Result<String, Exit> {
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Exit::error(format!("cannot read {what} from stdin: {e}")))?;
    Ok(text)
}

/// How `jsonkv patch` ends on `error`: a failed JSON Patch `test` is a condition that did not
/// hold, as a failed --if-mod-revision is (exit 3).
fn patch_exit(error: Error) -> Exit {
    let test_failed = matches!(
        error,
        Error::PatchFailed {
            kind: PatchFailure::TestFailed,
            ..
        }
    );
    let mut exit = Exit::from(error);
    if test_failed {
        exit.code = 3;
    }
    exit
}

/// Prints page by page, so a large store starts printing at once and is never all in memory.
async fn list(client: &Client, prefix: &str, query: &ListQuery) -> Result<(), Exit> {
    let mut token: Option<String> = None;
    loop {
        let page = client
            .query_page::<Value>(prefix, query, 0, token.as_deref())
            .await?;
        for entry in &page.entries {
            print_line(&EntryLine::from(entry))?;
        }
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => return Ok(()),
        }
    }
}

async fn watch(client: &Client, target: WatchTarget, options: WatchOptions) -> Result<(), Exit> {
    // With --prev-kv every put and delete line says what came before (null: nothing).
    let prev_kv = options.prev_kv;
    let mut events = client.watch::<Value>(target, options);
    while let Some(event) = events.next().await {
        let event = event?;
        let line = match &event {
            WatchEvent::Snapshot { revision, entries } => EventLine::Snapshot {
                revision: *revision,
                kvs: entries.iter().map(SnapshotKv::from).collect(),
            },
            WatchEvent::Put {
                entry,
                revision,
                previous,
                change,
                merge_patch,
            } => EventLine::Put {
                key: &entry.key,
                value: &entry.value,
                revision: *revision,
                view_change: change.map(change_name),
                merge_patch: merge_patch.as_ref(),
                prev: prev_kv.then(|| PrevKv::of(previous)),
            },
            WatchEvent::Delete {
                key,
                revision,
                lease_end,
                previous,
                change,
            } => EventLine::Delete {
                key: key.as_str(),
                revision: *revision,
                lease: lease_end.map(|end| end.lease),
                cause: lease_end.map(|end| end.cause.as_str()),
                view_change: change.map(change_name),
                prev: prev_kv.then(|| PrevKv::of(previous)),
            },
        };
        print_line(&line)?;
    }
    // The stream retries transport failures forever, so it only ends with an error.
    Ok(())
}

// The output lines. Structs rather than `json!` because they fix the field order (serde_json's
// map sorts keys) and borrow the values instead of copying them.

#[derive(Serialize)]
struct PutLine {
    revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<i64>,
}

#[derive(Serialize)]
struct PatchLine<'a> {
    revision: i64,
    /// The document the patch left.
    value: &'a Value,
}

#[derive(Serialize)]
struct EntryLine<'a> {
    key: &'a str,
    value: &'a Value,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
}

impl<'a> From<&'a Entry<Value>> for EntryLine<'a> {
    fn from(entry: &'a Entry<Value>) -> Self {
        EntryLine {
            key: &entry.key,
            value: &entry.value,
            create_revision: entry.create_revision,
            mod_revision: entry.mod_revision,
            version: entry.version,
        }
    }
}

#[derive(Serialize)]
struct SnapshotKv<'a> {
    key: &'a str,
    value: &'a Value,
    mod_revision: i64,
}

impl<'a> From<&'a Entry<Value>> for SnapshotKv<'a> {
    fn from(entry: &'a Entry<Value>) -> Self {
        SnapshotKv {
            key: &entry.key,
            value: &entry.value,
            mod_revision: entry.mod_revision,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum EventLine<'a> {
    Snapshot {
        revision: i64,
        kvs: Vec<SnapshotKv<'a>>,
    },
    Put {
        key: &'a str,
        value: &'a Value,
        revision: i64,
        /// With --where: entered or updated.
        #[serde(skip_serializing_if = "Option::is_none")]
        view_change: Option<&'static str>,
        /// With --diff: the merge patch from the previous version.
        #[serde(skip_serializing_if = "Option::is_none")]
        merge_patch: Option<&'a Value>,
        /// With --prev-kv: the key before the change, or null if it did not exist.
        #[serde(skip_serializing_if = "Option::is_none")]
        prev: Option<Option<PrevKv<'a>>>,
    },
    Delete {
        key: &'a str,
        revision: i64,
        /// For a delete a lease's end caused: the lease, and why it ended.
        #[serde(skip_serializing_if = "Option::is_none")]
        lease: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<&'static str>,
        /// With --where: left.
        #[serde(skip_serializing_if = "Option::is_none")]
        view_change: Option<&'static str>,
        /// With --prev-kv: the key as it was deleted.
        #[serde(skip_serializing_if = "Option::is_none")]
        prev: Option<Option<PrevKv<'a>>>,
    },
}

/// How a live query's event changes its view, as the output says it.
fn change_name(change: ViewChange) -> &'static str {
    match change {
        ViewChange::Entered => "entered",
        ViewChange::Updated => "updated",
        ViewChange::Left => "left",
    }
}

/// A key's value before a change, and the revision that had written it. An object, so that a
/// previous value of `null` differs from a key that did not exist (`"prev":null`).
#[derive(Serialize)]
struct PrevKv<'a> {
    value: &'a Value,
    mod_revision: i64,
}

impl<'a> PrevKv<'a> {
    fn of(previous: &'a Option<Entry<Value>>) -> Option<PrevKv<'a>> {
        previous.as_ref().map(|entry| PrevKv {
            value: &entry.value,
            mod_revision: entry.mod_revision,
        })
    }
}
