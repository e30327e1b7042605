//! The README's Rust example, compiled by `cargo test` so it cannot rot. Run it against a
//! server: `cargo run -p jsonkv-client --example quickstart` (JSONKV_ADDR picks the address, or
//! several, separated by commas).

use futures::StreamExt;
use jsonkv_client::{Client, Error, Precondition, WatchEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct User {
    name: String,
    visits: u64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let addr = std::env::var("JSONKV_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let client = Client::connect(addr).await?;

    let ada = User {
        name: "Ada".into(),
        visits: 1,
    };
    let written = client.insert("user/ada", &ada).await?;
    let entry = client.get::<User>("user/ada").await?.expect("just written");
    println!(
        "{} has {} visit(s), mod revision {}",
        entry.value.name, entry.value.visits, entry.mod_revision
    );

    // Compare-and-swap: succeeds only if nobody wrote since we read.
    let more = User {
        visits: entry.value.visits + 1,
        ..entry.value
    };
    match client
        .insert_if(
            "user/ada",
            &more,
            Precondition::ModRevision(written.revision),
        )
        .await
    {
        Ok(result) => println!("updated at revision {}", result.revision),
        Err(Error::PreconditionFailed {
            current_mod_revision,
            ..
        }) => {
            println!("lost a race: the key is now at revision {current_mod_revision}")
        }
        Err(other) => return Err(other),
    }

    // A watch starts with a snapshot, then streams changes; it reconnects and resumes by itself.
    // It opens when first polled, so take the snapshot before writing.
    let mut events = client.watch_prefix::<User>("user/");
    if let Some(WatchEvent::Snapshot { revision, entries }) = events.next().await.transpose()? {
        println!("snapshot at {revision}: {} user(s)", entries.len());
    }
    client
        .insert(
            "user/bob",
            &User {
                name: "Bob".into(),
                visits: 0,
            },
        )
        .await?;
    match events.next().await.transpose()? {
        Some(WatchEvent::Put {
            entry, revision, ..
        }) => println!("put {} at {revision}", entry.key),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
