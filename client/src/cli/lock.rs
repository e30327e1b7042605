//! `jsonkv lock` and `jsonkv elect`: the lock and election recipes of the client library, with
//! a command run under the lock, and the leader followed as it changes.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use futures::StreamExt;
use jsonkv_client::{Client, Entry, WatchEvent};
use serde::Serialize;
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};

use super::output::{print_line, Exit};

/// Runs `command` while holding the lock `name`, and ends as it does. If the lock is lost
/// meanwhile (its lease expired while this process was cut off from the server), the command
/// is killed: it no longer holds the lock.
pub async fn run(client: &Client, ttl: i64, name: &str, command: &[String]) -> Result<(), Exit> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Exit::error("give the COMMAND to run after --"))?;
    // Before the command starts: a signal that comes before its handler would end this process
    // and leave the command running without the lock.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Exit::error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(Exit::error)?;
    let guard = tokio::select! {
        guard = client.lock(name, ttl) => guard?,
        _ = interrupt.recv() => return Err(interrupted(libc_signal::INT)),
        _ = terminate.recv() => return Err(interrupted(libc_signal::TERM)),
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        // What a command can fence its writes with: the lock's key and create revision.
        .env("JSONKV_LOCK_KEY", guard.key())
        .env("JSONKV_LOCK_REVISION", guard.revision().to_string())
        .spawn()
        .map_err(|err| Exit::error(format!("cannot run {program}: {err}")))?;
    let ended = tokio::select! {
        status = child.wait() => Ended::Status(status.map_err(Exit::error)?),
        why = guard.lease().wait_lost() => Ended::Lost(why.to_string()),
        _ = interrupt.recv() => Ended::Signal(libc_signal::INT),
        _ = terminate.recv() => Ended::Signal(libc_signal::TERM),
    };
    if !matches!(ended, Ended::Status(_)) {
        // The command must not run on without the lock.
        let _ = child.kill().await;
    }
    match ended {
        Ended::Status(status) => {
            guard.release().await?;
            exit_like(status)
        }
        Ended::Lost(why) => Err(Exit::error(format!(
            "lost the lock {name}; the command was stopped: {why}"
        ))),
        Ended::Signal(signal) => {
            guard.release().await?;
            Err(interrupted(signal))
        }
    }
}

/// How this process ends on `signal`, as a shell reports a process it killed (128 + N).
fn interrupted(signal: u8) -> Exit {
    Exit {
        line: None,
        code: 128 + signal,
    }
}

enum Ended {
    Status(ExitStatus),
    Lost(String),
    Signal(u8),
}

/// The signal numbers `jsonkv lock` ends with, as a shell reports them (128 + N).
mod libc_signal {
    pub const INT: u8 = 2;
    pub const TERM: u8 = 15;
}

/// Ends this process as the command ended: its exit status, or 128 + the signal that killed it.
fn exit_like(status: ExitStatus) -> Result<(), Exit> {
    let code = match (status.code(), status.signal()) {
        (Some(0), _) => return Ok(()),
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Err(Exit {
        line: None,
        code: u8::try_from(code).unwrap_or(1),
    })
}

#[derive(Serialize)]
struct LeaderLine<'a> {
    key: &'a str,
    value: &'a Value,
}

/// Campaigns in `name` with `proposal`, prints the lead once won, and leads until interrupted
/// (or until the lead is lost, an error).
pub async fn elect(client: &Client, name: &str, ttl: i64, proposal: &str) -> Result<(), Exit> {
    let proposal: Value = jsonkv::value::parse_json_text(proposal).map_err(Exit::error)?;
    // Before the lead is announced: whoever reads the line may signal at once, and a signal
    // that comes before its handler ends the process without a resign.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Exit::error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(Exit::error)?;
    let election = client.election(name);
    let lead = tokio::select! {
        lead = election.campaign(ttl, &proposal) => lead?,
        _ = interrupt.recv() => return Err(interrupted(libc_signal::INT)),
        _ = terminate.recv() => return Err(interrupted(libc_signal::TERM)),
    };
    print_line(&LeaderLine {
        key: lead.key(),
        value: &proposal,
    })?;
    tokio::select! {
        why = lead.lease().wait_lost() => {
            return Err(Exit::error(format!("lost the lead of {name}: {why}")));
        }
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    lead.resign().await?;
    Ok(())
}

/// Prints the leader of `name` (the candidate first in line) each time it changes: another
/// candidate, or a new proclamation (a new mod revision of the leader's key).
pub async fn listen(client: &Client, name: &str) -> Result<(), Exit> {
    let mut candidates: HashMap<String, Entry<Value>> = HashMap::new();
    let mut shown: Option<(String, i64)> = None;
    let mut watch = client.watch_prefix::<Value>(&format!("{name}/"));
    while let Some(event) = watch.next().await {
        match event? {
            WatchEvent::Snapshot { entries, .. } => {
                for entry in entries {
                    candidates.insert(entry.key.clone(), entry);
                }
            }
            WatchEvent::Put { entry, .. } => {
                candidates.insert(entry.key.clone(), entry);
            }
            WatchEvent::Delete { key, .. } => {
                candidates.remove(&key);
            }
        }
        let Some(leader) = candidates
            .values()
            .min_by_key(|entry| entry.create_revision)
        else {
            continue;
        };
        let now = (leader.key.clone(), leader.mod_revision);
        if shown.as_ref() != Some(&now) {
            print_line(&LeaderLine {
                key: &leader.key,
                value: &leader.value,
            })?;
            shown = Some(now);
        }
    }
    Ok(())
}
