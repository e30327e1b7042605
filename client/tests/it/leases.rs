//! Leases, locks and elections through the client library, against a real in-process server.
//!
//! Guarantees proved here:
//! - A `Lease` keeps itself alive past its TTL, and dropping it revokes it, deleting its keys;
//!   watch events name the lease and the cause: `a_lease_handle_keeps_its_lease_alive_until_dropped`.
//! - Holders of one lock never overlap, and a released lock passes to the next in line:
//!   `lock_holders_never_overlap`.
//! - A lock whose holder's lease ends passes to the waiter, and the holder learns it lost it:
//!   `a_lost_lease_hands_the_lock_on`.
//! - An election has one leader at a time, whose proclamations everyone reads, and resigning
//!   hands the lead on: `an_election_has_one_leader_at_a_time`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonkv_client::{Client, Error, LeaseCause, LeaseEnd, WatchEvent};
use serde_json::{json, Value};

use crate::common::{self, next_event, PATIENCE};

#[tokio::test]
async fn a_lease_handle_keeps_its_lease_alive_until_dropped() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let lease = client.lease(2).await.unwrap();
    let id = lease.id();
    client
        .insert_leased("h/a", &json!(1), None, id)
        .await
        .unwrap();
    assert_eq!(
        client.get::<Value>("h/a").await.unwrap().unwrap().lease,
        Some(id)
    );
    let mut watch = client.watch_prefix::<Value>("h/");
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Snapshot { .. }
    ));
    // Two TTLs: kept alive in the background.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(lease.lost().is_none());
    assert!(client.get::<Value>("h/a").await.unwrap().is_some());
    assert_eq!(
        client.lease_time_to_live(id, true).await.unwrap().keys,
        ["h/a"]
    );
    drop(lease);
    match next_event(&mut watch).await {
        WatchEvent::Delete { key, lease_end, .. } => {
            assert_eq!(key, "h/a");
            assert_eq!(
                lease_end,
                Some(LeaseEnd {
                    lease: id,
                    cause: LeaseCause::Revoked
                })
            );
        }
        other => panic!("expected the lease's delete, got {other:?}"),
    }
    assert!(matches!(
        client.lease_keep_alive(id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        client.insert_leased("h/b", &json!(2), None, id).await,
        Err(Error::NotFound(_))
    ));
    assert!(client.get::<Value>("h/b").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holders_never_overlap() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let turns = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (client, inside, turns) = (client.clone(), inside.clone(), turns.clone());
            tokio::spawn(async move {
                for _ in 0..3 {
                    let guard = client.lock("mutex", 5).await.unwrap();
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    turns.fetch_add(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(PATIENCE * 3, task)
            .await
            .expect("every holder gets its turns")
            .unwrap();
    }
    assert_eq!(turns.load(Ordering::SeqCst), 15);
    assert!(client.list::<Value>("mutex/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lost_lease_hands_the_lock_on() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    // A short TTL: the holder learns of the loss at its next keep-alive, a third of it later.
    let first = client.lock("l", 6).await.unwrap();
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { client.lock("l", 60).await.unwrap() }
    });
    // The holder's lease ends behind its back (as when it expires).
    client.lease_revoke(first.lease().id()).await.unwrap();
    let second = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("the waiter gets the lock")
        .unwrap();
    assert!(second.revision() > first.revision());
    let why = tokio::time::timeout(PATIENCE, first.lease().wait_lost())
        .await
        .expect("the first holder learns it lost the lock");
    assert!(matches!(*why, Error::NotFound(_)), "{why}");
}

#[tokio::test]
async fn an_election_has_one_leader_at_a_time() {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.unwrap();
    let election = client.election("e");
    assert!(election.leader::<Value>().await.unwrap().is_none());
    let lead = election.campaign(60, &json!("a")).await.unwrap();
    let second = tokio::spawn({
        let election = election.clone();
        async move { election.campaign(60, &json!("b")).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "two leaders at once");
    assert_eq!(
        election.leader::<Value>().await.unwrap().unwrap().value,
        json!("a")
    );
    lead.proclaim(&json!("a2")).await.unwrap();
    assert_eq!(
        election.leader::<Value>().await.unwrap().unwrap().value,
        json!("a2")
    );
    lead.resign().await.unwrap();
    let next = tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the next candidate leads")
        .unwrap();
    assert_eq!(
        election.leader::<Value>().await.unwrap().unwrap().value,
        json!("b")
    );
    next.resign().await.unwrap();
    assert!(election.leader::<Value>().await.unwrap().is_none());
}
