//! `jsonkv lease`: grant, keep alive, revoke and inspect leases.

use std::time::Duration;

use clap::Subcommand;
use jsonkv_client::{Client, Error};
use serde::Serialize;

use super::output::{print_line, Exit, RevisionLine};

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds; prints {"id":ID,"ttl_seconds":TTL}.
    Grant {
        ttl: i64,
        /// Give the lease this id instead of a random one.
        #[arg(long, value_name = "ID")]
        id: Option<i64>,
    },
    /// Keep lease ID alive until interrupted: a keep-alive every third of its TTL, each printed
    /// as {"id":ID,"ttl_seconds":TTL}. Fails once the lease is gone.
    Keepalive { id: i64 },
    /// End lease ID now, deleting its keys; prints {"revision":N}.
    Revoke { id: i64 },
    /// Print lease ID's TTL and time left (and with --keys its keys) as one JSON object.
    Ttl {
        id: i64,
        #[arg(long)]
        keys: bool,
    },
    /// Print every live lease, one {"id":ID} line each.
    List,
}

#[derive(Serialize)]
struct LeaseLine {
    id: i64,
    ttl_seconds: i64,
}

#[derive(Serialize)]
struct TtlLine {
    id: i64,
    ttl_seconds: i64,
    granted_ttl_seconds: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<String>>,
}

#[derive(Serialize)]
struct IdLine {
    id: i64,
}

pub async fn run(client: &Client, command: LeaseCommand) -> Result<(), Exit> {
    match command {
        LeaseCommand::Grant { ttl, id } => {
            let grant = client.lease_grant(ttl, id).await?;
            print_line(&LeaseLine {
                id: grant.id,
                ttl_seconds: grant.ttl_seconds,
            })
        }
        LeaseCommand::Keepalive { id } => keep_alive(client, id).await,
        LeaseCommand::Revoke { id } => print_line(&RevisionLine {
            revision: client.lease_revoke(id).await?,
        }),
        LeaseCommand::Ttl { id, keys } => {
            let status = client.lease_time_to_live(id, keys).await?;
            print_line(&TtlLine {
                id: status.id,
                ttl_seconds: status.ttl_seconds,
                granted_ttl_seconds: status.granted_ttl_seconds,
                keys: keys.then_some(status.keys),
            })
        }
        LeaseCommand::List => {
            for id in client.lease_list().await? {
                print_line(&IdLine { id })?;
            }
            Ok(())
        }
    }
}

/// Keeps the lease alive every third of its TTL until interrupted, printing each renewal. A
/// keep-alive that fails for want of a server is tried again a second later; one that finds the
/// lease gone ends the command with an error.
async fn keep_alive(client: &Client, id: i64) -> Result<(), Exit> {
    loop {
        let pause = match client.lease_keep_alive(id).await {
            Ok(ttl_seconds) => {
                print_line(&LeaseLine { id, ttl_seconds })?;
                Duration::from_secs(ttl_seconds.max(1) as u64) / 3
            }
            Err(err @ (Error::NotFound(_) | Error::InvalidArgument(_))) => return Err(err.into()),
            Err(err) => {
                eprintln!("warning: keep-alive failed, trying again: {err}");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(pause).await;
    }
}
