//! The request/response calls of the typed client (get, insert, delete, list) against a real
//! in-process server.

use jsonkv_client::{Client, Error, Precondition};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::common;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Service {
    name: String,
    port: u16,
    tags: Vec<String>,
    weight: Option<f64>,
}

async fn connect() -> (jsonkv_server::RunningServer, Client) {
    let server = common::start().await;
    let client = Client::connect(server.url()).await.expect("connect");
    (server, client)
}

#[tokio::test]
async fn typed_struct_round_trips_with_revisions() {
    let (_server, client) = connect().await;
    let svc = Service {
        name: "api".into(),
        port: 8080,
        tags: vec!["a".into(), "b".into()],
        weight: Some(0.5),
    };
    let first = client.insert("svc/api", &svc).await.unwrap();
    assert_eq!(first.revision, 1);
    assert!(first.created());
    assert_eq!(first.version, 1);

    let entry = client.get::<Service>("svc/api").await.unwrap().unwrap();
    assert_eq!(entry.key, "svc/api");
    assert_eq!(entry.value, svc);
    assert_eq!(
        (entry.create_revision, entry.mod_revision, entry.version),
        (1, 1, 1)
    );

    let moved = Service { port: 9090, ..svc };
    let second = client.insert("svc/api", &moved).await.unwrap();
    assert_eq!(second.revision, 2);
    assert_eq!(second.create_revision, 1);
    assert_eq!(second.version, 2);
    assert!(!second.created());
    let entry = client.get::<Service>("svc/api").await.unwrap().unwrap();
    assert_eq!(entry.value.port, 9090);
    assert_eq!(
        (entry.create_revision, entry.mod_revision, entry.version),
        (1, 2, 2)
    );
}

#[tokio::test]
async fn nested_json_and_unicode_survive() {
    let (_server, client) = connect().await;
    let doc = json!({
        "ünïcödé": "日本語 ✓ 🦀 \u{0000} \"quoted\" \\ back",
        "nested": {"list": [1, [2, [3, {"deep": null}]], true, false], "empty": {}, "arr": []},
        "neg": -0.25,
    });
    client.insert("doc/ключ", &doc).await.unwrap();
    let entry = client.get::<Value>("doc/ключ").await.unwrap().unwrap();
    assert_eq!(entry.key, "doc/ключ");
    assert_eq!(entry.value, doc);
}

#[tokio::test]
async fn huge_numbers_survive_exactly() {
    let (_server, client) = connect().await;

    // A u128 through a typed struct.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Big {
        n: u128,
        i: i128,
    }
    let big = Big {
        n: u128::MAX,
        i: i128::MIN,
    };
    client.insert("big/typed", &big).await.unwrap();
    let entry = client.get::<Big>("big/typed").await.unwrap().unwrap();
    assert_eq!(entry.value, big);

    // Numbers beyond any machine type, and a decimal beyond f64, as untyped JSON text.
    let text = r#"{"d":0.100000000000000000000000000001,"n":123456789012345678901234567890,"neg":-98765432109876543210987654321}"#;
    let doc: Value = serde_json::from_str(text).unwrap();
    client.insert("big/json", &doc).await.unwrap();
    let entry = client.get::<Value>("big/json").await.unwrap().unwrap();
    assert_eq!(serde_json::to_string(&entry.value).unwrap(), text);
}

#[tokio::test]
async fn large_values_round_trip() {
    let (_server, client) = connect().await;
    // Close to the server's 1 MiB default value limit, above tonic's small-message paths.
    let blob = "x".repeat(1000 * 1024);
    client.insert("blob", &blob).await.unwrap();
    let entry = client.get::<String>("blob").await.unwrap().unwrap();
    assert_eq!(entry.value, blob);
}

#[tokio::test]
async fn missing_key_is_none() {
    let (_server, client) = connect().await;
    assert!(client.get::<Value>("nope").await.unwrap().is_none());
    assert_eq!(client.delete("nope").await.unwrap(), None);
}

#[tokio::test]
async fn value_of_the_wrong_type_is_a_json_error() {
    let (_server, client) = connect().await;
    client.insert("s", &"text").await.unwrap();
    match client.get::<u32>("s").await {
        Err(Error::Json { key, .. }) => assert_eq!(key, "s"),
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[tokio::test]
async fn insert_if_absent_twice_fails_with_the_current_revision() {
    let (_server, client) = connect().await;
    client.insert("other", &0).await.unwrap(); // revision 1
    let created = client
        .insert_if("k", &"first", Precondition::Absent)
        .await
        .unwrap();
    assert_eq!(created.revision, 2);

    match client.insert_if("k", &"second", Precondition::Absent).await {
        Err(Error::PreconditionFailed {
            key,
            expected_mod_revision,
            current_mod_revision,
        }) => {
            assert_eq!(key, "k");
            assert_eq!(expected_mod_revision, 0);
            assert_eq!(current_mod_revision, 2);
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    // Nothing changed.
    let entry = client.get::<String>("k").await.unwrap().unwrap();
    assert_eq!(entry.value, "first");
    assert_eq!(entry.mod_revision, 2);
}

#[tokio::test]
async fn insert_if_mod_revision_matches_or_fails() {
    let (_server, client) = connect().await;
    let first = client.insert("k", &1).await.unwrap();
    let second = client
        .insert_if("k", &2, Precondition::ModRevision(first.revision))
        .await
        .unwrap();
    assert_eq!(second.version, 2);

    // The old revision no longer matches.
    let err = client
        .insert_if("k", &3, Precondition::ModRevision(first.revision))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PreconditionFailed { current_mod_revision, expected_mod_revision, .. }
                if current_mod_revision == second.revision && expected_mod_revision == first.revision
        ),
        "{err:?}"
    );
    // The message names the key and both revisions on one line.
    let message = err.to_string();
    assert!(message.contains("k") && message.contains(&second.revision.to_string()));
    assert!(!message.contains('\n'));

    // On an absent key the current mod revision is 0.
    let err = client
        .insert_if("absent", &3, Precondition::ModRevision(5))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::PreconditionFailed {
            current_mod_revision: 0,
            ..
        }
    ));
    assert_eq!(client.get::<i64>("k").await.unwrap().unwrap().value, 2);
}

#[tokio::test]
async fn insert_returning_previous_gives_the_old_entry() {
    let (_server, client) = connect().await;
    let (result, previous) = client
        .insert_returning_previous::<String>("k", &"a", None)
        .await
        .unwrap();
    assert!(result.created());
    assert!(previous.is_none());

    let (result, previous) = client
        .insert_returning_previous::<String>("k", &"b", Some(Precondition::ModRevision(1)))
        .await
        .unwrap();
    let previous = previous.expect("key existed");
    assert_eq!(previous.value, "a");
    assert_eq!(previous.mod_revision, 1);
    assert_eq!(result.revision, 2);
}

#[tokio::test]
async fn delete_and_delete_if() {
    let (_server, client) = connect().await;
    client.insert("a", &1).await.unwrap(); // 1
    client.insert("b", &2).await.unwrap(); // 2

    assert_eq!(client.delete("a").await.unwrap(), Some(3));
    assert!(client.get::<Value>("a").await.unwrap().is_none());
    assert_eq!(client.delete("a").await.unwrap(), None);

    // Wrong revision: nothing deleted, current revision reported.
    let err = client
        .delete_if("b", Precondition::ModRevision(1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::PreconditionFailed {
            current_mod_revision: 2,
            ..
        }
    ));
    assert!(client.get::<Value>("b").await.unwrap().is_some());

    // "Only if absent" on an existing key fails; on a missing one it succeeds, deleting nothing.
    assert!(matches!(
        client.delete_if("b", Precondition::Absent).await,
        Err(Error::PreconditionFailed { .. })
    ));
    assert_eq!(
        client.delete_if("a", Precondition::Absent).await.unwrap(),
        None
    );
    // A matching revision deletes.
    assert_eq!(
        client
            .delete_if("b", Precondition::ModRevision(2))
            .await
            .unwrap(),
        Some(4)
    );
    assert!(matches!(
        client.delete_if("b", Precondition::ModRevision(2)).await,
        Err(Error::PreconditionFailed {
            current_mod_revision: 0,
            ..
        })
    ));
}

#[tokio::test]
async fn list_pages_and_follows_all_pages() {
    let (_server, client) = connect().await;
    for i in 0..7 {
        client
            .insert(&format!("p/{i:02}"), &json!({ "i": i }))
            .await
            .unwrap();
    }
    client.insert("q/outside", &0).await.unwrap();

    // Page by page, 3 at a time.
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_page::<Value>("p/", 3, token.as_deref())
            .await
            .unwrap();
        assert!(page.entries.len() <= 3);
        assert_eq!(page.revision, 8);
        pages += 1;
        keys.extend(page.entries.into_iter().map(|e| e.key));
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..7).map(|i| format!("p/{i:02}")).collect();
    assert_eq!(keys, expected);

    // All pages at once, typed.
    #[derive(Deserialize)]
    struct Item {
        i: u32,
    }
    let all = client.list::<Item>("p/").await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.value.i).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    assert_eq!(all[3].mod_revision, 4);

    // An empty prefix lists every key; a prefix matching nothing lists none.
    assert_eq!(client.list::<Value>("").await.unwrap().len(), 8);
    assert!(client.list::<Value>("zzz").await.unwrap().is_empty());
}

#[tokio::test]
async fn list_follows_more_than_one_default_page() {
    let (_server, client) = connect().await;
    // Above the server's default page size of 100.
    for i in 0..150 {
        client.insert(&format!("k{i:03}"), &i).await.unwrap();
    }
    let all = client.list::<u32>("k").await.unwrap();
    assert_eq!(all.len(), 150);
    assert!(all.iter().enumerate().all(|(i, e)| e.value == i as u32));
}

#[tokio::test]
async fn invalid_arguments_are_reported() {
    let (_server, client) = connect().await;
    let err = client.insert("", &1).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().starts_with("invalid argument: "));

    let err = client
        .list_page::<Value>("", 1, Some("not a token"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn connecting_to_a_dead_address_is_a_clear_error() {
    // Bind then drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to http://127.0.0.1:{port}: connection refused")
    );
}

#[tokio::test]
async fn calls_after_the_server_stopped_fail_without_panicking() {
    let (server, client) = connect().await;
    client.insert("k", &1).await.unwrap();
    server.shutdown().await;
    let err = client.get::<Value>("k").await.unwrap_err();
    assert!(matches!(err, Error::Status(_)), "{err:?}");
    assert!(!err.to_string().contains('\n'));
}

/// Twenty values of ~1 MiB each: the server's default page of 100 keys would be ~20 MiB, above
/// its 16 MiB message limit, so the server must cut pages by size as it cuts watch snapshots.
#[tokio::test]
async fn list_of_large_values_is_cut_into_pages_that_fit() {
    let (_server, client) = connect().await;
    let blob = "x".repeat(1000 * 1024);
    for i in 0..20 {
        client.insert(&format!("b{i:02}"), &blob).await.unwrap();
    }
    let all = client.list::<String>("").await.unwrap();
    assert_eq!(all.len(), 20);
}
