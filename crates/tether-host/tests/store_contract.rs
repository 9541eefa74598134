//! The store's contract, written once and run against both backends:
//! SQLite (always) and PostgreSQL (when `TETHER_TEST_POSTGRES` names a
//! server; `scripts/postgres.sh` starts one, and with
//! `TETHER_REQUIRE_POSTGRES=1` a missing server fails the run). Each
//! PostgreSQL test gets a database of its own.

use std::sync::Arc;

use serde_json::json;
use tether_host::store::outbox::{
    Appended, FullPolicy, NewOutboxMessage, OutboxLimits, OutboxStatus,
};
use tether_host::store::{Change, DeadBatch, InstanceRecord, Secrets, StoreError};
use tether_host::{PgStore, SqliteStore, Store};

/// Runs a contract check against SQLite and PostgreSQL.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::sqlite_store().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                if let Some(store) = super::pg_store(stringify!($name)).await {
                    super::$name(store).await;
                }
            })*
        }
    };
}

/// What only PostgreSQL does: several hosts on one database, sealed
/// secrets in its tables, the cluster's fence.
#[path = "store_contract/postgres_only.rs"]
mod postgres_only;

contract!(
    instances_insert_update_delete_with_versions_and_audit,
    settings_round_trip,
    outbox_purge_deletes_what_is_not_in_flight,
    done_outbox_messages_are_pruned_others_kept,
    done_marks_share_the_append_transaction,
    acks_by_message_id_and_by_mqtt_packet_id_complete_in_flight_messages,
    queue_counts_follow_appends_done_marks_and_acks_across_batches,
    caller_ids_are_stored_once,
    drop_oldest_makes_room_and_reject_refuses,
    retry_requeue_and_stats,
    events_are_numbered_without_gaps_and_trimmed,
    dead_webhook_batches_newest_first,
);

async fn sqlite_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap())
}

/// A store on a fresh PostgreSQL database, or None (skipped) without a
/// server.
async fn pg_store(test: &str) -> Option<Arc<dyn Store>> {
    let url = pg_database(test).await?;
    Some(Arc::new(
        PgStore::open_with(&url, Secrets::Plaintext).await.unwrap(),
    ))
}

/// Creates a database for `test` on the server `TETHER_TEST_POSTGRES`
/// names; returns its URL.
pub async fn pg_database(test: &str) -> Option<String> {
    use sqlx::Connection;
    let Ok(base) = std::env::var("TETHER_TEST_POSTGRES") else {
        assert!(
            std::env::var("TETHER_REQUIRE_POSTGRES").is_err(),
            "TETHER_REQUIRE_POSTGRES is set but TETHER_TEST_POSTGRES is not: start scripts/postgres.sh"
        );
        eprintln!("skipped: no PostgreSQL (set TETHER_TEST_POSTGRES)");
        return None;
    };
    let name = format!(
        "t_{}_{}",
        test.chars().take(40).collect::<String>(),
        std::process::id()
    );
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (root, _) = base.rsplit_once('/').unwrap();
    Some(format!("{root}/{name}"))
}

/// A one-byte text message for client `c` with the caller's id `id`.
/// The sequence numbers of client `c`'s pending messages, in order.
async fn pending_seqs(store: &dyn Store) -> Vec<i64> {
    store
        .outbox_pending("c", 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect()
}

fn m(id: &str) -> NewOutboxMessage {
    NewOutboxMessage {
        client: "c".into(),
        msg_id: id.into(),
        caller_id: true,
        binary: false,
        payload: b"x".to_vec(),
        expires_ms: None,
        limits: Default::default(),
    }
}

fn record(key: &str) -> InstanceRecord {
    InstanceRecord {
        key: key.into(),
        type_name: "feed".into(),
        predefined: false,
        url: "wss://u:secret-pw@example.test/feed".into(),
        user: Some("alice".into()),
        password: Some("hunter2".into()),
        headers: [
            ("Authorization".to_string(), "Bearer t0ken".to_string()),
            ("X-Plain".to_string(), "v".to_string()),
        ]
        .into(),
        timeout_secs: 7,
        auto_connect: true,
        use_env_proxy: false,
        settings: json!({"qos": 1}).as_object().unwrap().clone(),
        created_ms: 1,
        updated_ms: 2,
        version: 1,
    }
}

fn change(action: &str) -> Change<'_> {
    Change {
        actor: "test",
        action,
        detail: json!({"a": action}),
    }
}

async fn instances_insert_update_delete_with_versions_and_audit(store: Arc<dyn Store>) {
    let r = record("k1");
    store.insert(&r, change("create")).await.unwrap();
    assert!(matches!(
        store.insert(&r, change("create")).await,
        Err(StoreError::Duplicate(k)) if k == "k1"
    ));
    assert_eq!(store.get("k1").await.unwrap().unwrap(), r);
    let mut edited = r.clone();
    edited.url = "ws://127.0.0.1:9/".into();
    edited.auto_connect = false;
    assert_eq!(
        store
            .update(&edited, Some(1), change("update"))
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store.update(&edited, Some(1), change("update")).await,
        Err(StoreError::Conflict {
            expected: 1,
            current: 2,
            ..
        })
    ));
    let got = store.get("k1").await.unwrap().unwrap();
    assert_eq!(
        (got.url.as_str(), got.auto_connect, got.version),
        ("ws://127.0.0.1:9/", false, 2)
    );
    store.insert(&record("k0"), change("create")).await.unwrap();
    let keys: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["k0", "k1"]);
    assert!(matches!(
        store.delete("k1", Some(1), change("delete")).await,
        Err(StoreError::Conflict { .. })
    ));
    store.delete("k1", Some(2), change("delete")).await.unwrap();
    assert!(store.get("k1").await.unwrap().is_none());
    assert!(matches!(
        store.delete("k1", None, change("delete")).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .audit("api", "connect", "k0", json!({}))
        .await
        .unwrap();
    let log: Vec<(String, String)> = store
        .audit_log(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.key))
        .collect();
    let expect = [
        ("connect", "k0"),
        ("delete", "k1"),
        ("create", "k0"),
        ("update", "k1"),
        ("create", "k1"),
    ];
    assert_eq!(log, expect.map(|(a, k)| (a.to_string(), k.to_string())));
}

async fn settings_round_trip(store: Arc<dyn Store>) {
    assert_eq!(store.setting("s").await.unwrap(), None);
    store.set_setting("s", "1").await.unwrap();
    store.set_setting("s", "2").await.unwrap();
    assert_eq!(store.setting("s").await.unwrap().as_deref(), Some("2"));
}

async fn caller_ids_are_stored_once(store: Arc<dyn Store>) {
    let first = store
        .outbox_append(&[m("a"), m("b"), m("a")])
        .await
        .unwrap();
    let Appended::Stored { seq: a } = first[0] else {
        panic!("{first:?}")
    };
    assert!(matches!(first[1], Appended::Stored { .. }), "{first:?}");
    assert_eq!(first[2], Appended::Duplicate { seq: a });
    let again = store.outbox_append(&[m("b"), m("z")]).await.unwrap();
    let Appended::Stored { seq: b } = first[1] else {
        panic!()
    };
    assert_eq!(again[0], Appended::Duplicate { seq: b });
    let ids: Vec<String> = store
        .outbox_list("c", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["a", "b", "z"]);
}

async fn drop_oldest_makes_room_and_reject_refuses(store: Arc<dyn Store>) {
    let limited = |id: &str, when_full| {
        let mut msg = m(id);
        msg.limits = OutboxLimits {
            max_messages: 2,
            when_full,
            ..Default::default()
        };
        msg
    };
    let drop = FullPolicy::DropOldest;
    let r = store
        .outbox_append(&[limited("a", drop), limited("b", drop), limited("c", drop)])
        .await
        .unwrap();
    assert!(
        r.iter().all(|a| matches!(a, Appended::Stored { .. })),
        "{r:?}"
    );
    let all: Vec<(String, OutboxStatus)> = store
        .outbox_list("c", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.id, m.status))
        .collect();
    assert_eq!(
        all,
        [
            ("a".to_string(), OutboxStatus::Dead),
            ("b".to_string(), OutboxStatus::Pending),
            ("c".to_string(), OutboxStatus::Pending)
        ]
    );
    let r = store
        .outbox_append(&[limited("d", FullPolicy::Reject)])
        .await
        .unwrap();
    assert_eq!(
        r[0],
        Appended::Full {
            messages: 2,
            bytes: 2
        }
    );
}

async fn retry_requeue_and_stats(store: Arc<dyn Store>) {
    store
        .outbox_append(&[m("a"), m("b"), m("c")])
        .await
        .unwrap();
    let seqs = pending_seqs(&*store).await;
    store
        .outbox_mark(&seqs[..1], OutboxStatus::Dead, Some("gave up"))
        .await
        .unwrap();
    store
        .outbox_mark(&seqs[1..2], OutboxStatus::InFlight, None)
        .await
        .unwrap();
    let stats = store.outbox_stats("c").await.unwrap();
    assert_eq!((stats.pending, stats.in_flight, stats.dead), (1, 1, 1));
    assert!(stats.oldest_ms.is_some());
    assert_eq!(store.outbox_requeue("c").await.unwrap(), 1);
    let b = &store
        .outbox_list("c", Some(OutboxStatus::Pending), 10)
        .await
        .unwrap()[0];
    assert_eq!((b.id.as_str(), b.attempts), ("b", 1));
    let dead = &store
        .outbox_list("c", Some(OutboxStatus::Dead), 10)
        .await
        .unwrap()[0];
    assert_eq!(dead.last_error.as_deref(), Some("gave up"));
    assert_eq!(store.outbox_retry("c", None).await.unwrap(), 1);
    let all = store.outbox_stats_all().await.unwrap();
    assert_eq!(all["c"].pending, 3);
    assert_eq!(all.len(), 1);
}

async fn events_are_numbered_without_gaps_and_trimmed(store: Arc<dyn Store>) {
    let (lo, hi) = store.events_bounds().await.unwrap();
    assert_eq!((lo, hi), (1, 0));
    let ev = |c: &str, i: i64| (c.to_string(), i, format!("{{\"i\":{i}}}"));
    let a = store
        .events_append(&[ev("x", 1), ev("y", 2), ev("x", 3)])
        .await
        .unwrap();
    assert_eq!(a, [1, 2, 3]);
    let b = store.events_append(&[ev("y", 4)]).await.unwrap();
    assert_eq!(b, [4]);
    let xs: Vec<i64> = store
        .events_after(0, Some("x"), 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(xs, [1, 3]);
    let after: Vec<(i64, String)> = store
        .events_after(2, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.json))
        .collect();
    assert_eq!(
        after,
        [(3, "{\"i\":3}".to_string()), (4, "{\"i\":4}".to_string())]
    );
    // Keep the newest two.
    assert_eq!(store.events_trim(2, 0).await.unwrap(), 2);
    assert_eq!(store.events_bounds().await.unwrap(), (3, 4));
    // Everything gone: the next number is still known.
    assert_eq!(store.events_trim(0, i64::MAX).await.unwrap(), 2);
    assert_eq!(store.events_bounds().await.unwrap(), (5, 4));
    assert_eq!(store.events_append(&[ev("x", 5)]).await.unwrap(), [5]);
}

async fn dead_webhook_batches_newest_first(store: Arc<dyn Store>) {
    for (i, w) in ["w", "w", "other"].iter().enumerate() {
        store
            .webhook_dead_add(&DeadBatch {
                id: 0,
                webhook: w.to_string(),
                from_seq: i as i64 * 10,
                to_seq: i as i64 * 10 + 9,
                events: 10,
                attempts: 5,
                last_error: "HTTP 500".into(),
                at_ms: 7,
            })
            .await
            .unwrap();
    }
    let list = store.webhook_dead_list("w", 10).await.unwrap();
    let from: Vec<i64> = list.iter().map(|b| b.from_seq).collect();
    assert_eq!(from, [10, 0]);
    assert_eq!(list[0].last_error, "HTTP 500");
}

async fn outbox_purge_deletes_what_is_not_in_flight(store: Arc<dyn Store>) {
    use tether_host::store::outbox::OutboxStatus;
    store
        .outbox_append(&[m("a"), m("b"), m("c")])
        .await
        .unwrap();
    let first = store.outbox_pending("c", 1).await.unwrap();
    store
        .outbox_mark(&[first[0].seq], OutboxStatus::InFlight, None)
        .await
        .unwrap();
    assert_eq!(store.outbox_purge("c", None).await.unwrap(), 2);
    let left = store.outbox_list("c", None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, OutboxStatus::InFlight);
}

async fn done_outbox_messages_are_pruned_others_kept(store: Arc<dyn Store>) {
    use tether_host::store::outbox::OutboxStatus;
    store
        .outbox_append(&[m("a"), m("b"), m("c"), m("d")])
        .await
        .unwrap();
    let all = store.outbox_pending("c", 10).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|m| m.seq).collect();
    store
        .outbox_mark(&seqs[..2], OutboxStatus::Done, None)
        .await
        .unwrap();
    store
        .outbox_mark(&seqs[2..3], OutboxStatus::Dead, Some("x"))
        .await
        .unwrap();
    // Nothing is old enough yet.
    assert_eq!(
        store
            .outbox_prune_done(tether_host::store::now_ms() - 60_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .outbox_prune_done(tether_host::store::now_ms() + 1)
            .await
            .unwrap(),
        2
    );
    let left: Vec<OutboxStatus> = store
        .outbox_list("c", None, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.status)
        .collect();
    assert_eq!(left, [OutboxStatus::Dead, OutboxStatus::Pending]);
    // The queue size the limits use still counts only the pending one.
    let stats = store.outbox_stats("c").await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.done), (1, 1, 0));
}

async fn done_marks_share_the_append_transaction(store: Arc<dyn Store>) {
    use tether_host::store::outbox::{OutboxCommit, OutboxStatus};
    store.outbox_append(&[m("a"), m("b")]).await.unwrap();
    let first = store.outbox_pending("c", 10).await.unwrap();
    assert_eq!(first.len(), 2);
    // "a" delivered while "c" arrives: one commit does both.
    let appends = [m("c")];
    store
        .outbox_commit(OutboxCommit {
            appends: &appends,
            done: &[first[0].seq],
            acks: &[],
        })
        .await
        .unwrap();
    let all: Vec<(String, OutboxStatus)> = store
        .outbox_list("c", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.id, m.status))
        .collect();
    assert!(all.contains(&("a".into(), OutboxStatus::Done)), "{all:?}");
    assert!(
        all.contains(&("b".into(), OutboxStatus::Pending)),
        "{all:?}"
    );
    assert!(
        all.contains(&("c".into(), OutboxStatus::Pending)),
        "{all:?}"
    );
    let stats = store.outbox_stats("c").await.unwrap();
    assert_eq!((stats.pending, stats.done), (2, 1), "{stats:?}");
}

async fn acks_by_message_id_and_by_mqtt_packet_id_complete_in_flight_messages(
    store: Arc<dyn Store>,
) {
    use tether_host::brokers::framing::mqtt_packet_id;
    use tether_host::store::outbox::{AckId, OutboxAck, OutboxCommit, OutboxStatus};
    store
        .outbox_append(&[m("a"), m("b"), m("c")])
        .await
        .unwrap();
    let all = store.outbox_pending("c", 10).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|m| m.seq).collect();
    store
        .outbox_mark(&seqs[..2], OutboxStatus::InFlight, None)
        .await
        .unwrap();
    assert_eq!(store.outbox_in_flight("c").await.unwrap(), 2);
    let ack = |id| OutboxAck {
        client: "c".into(),
        id,
    };
    // "c" is pending, not in flight: its ack changes nothing; an unknown
    // id neither.
    let acks = [
        ack(AckId::Message("a".into())),
        ack(AckId::Packet(mqtt_packet_id(seqs[1]))),
        ack(AckId::Message("c".into())),
        ack(AckId::Packet(999)),
    ];
    store
        .outbox_commit(OutboxCommit {
            acks: &acks,
            ..Default::default()
        })
        .await
        .unwrap();
    let status: Vec<OutboxStatus> = store
        .outbox_list("c", None, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.status)
        .collect();
    assert_eq!(
        status,
        [
            OutboxStatus::Done,
            OutboxStatus::Done,
            OutboxStatus::Pending
        ]
    );
    assert_eq!(store.outbox_in_flight("c").await.unwrap(), 0);
}

async fn queue_counts_follow_appends_done_marks_and_acks_across_batches(store: Arc<dyn Store>) {
    use tether_host::store::outbox::{Appended, OutboxLimits, OutboxStatus};
    let limited = |id: &str| {
        let mut msg = m(id);
        msg.limits = OutboxLimits {
            max_messages: 4,
            ..Default::default()
        };
        msg
    };
    let first = store
        .outbox_append(&[limited("a"), limited("b"), limited("c")])
        .await
        .unwrap();
    assert!(
        first.iter().all(|a| matches!(a, Appended::Stored { .. })),
        "{first:?}"
    );
    let a = store.outbox_pending("c", 1).await.unwrap()[0].seq;
    store
        .outbox_mark(&[a], OutboxStatus::Done, None)
        .await
        .unwrap();
    // Two not done (b, c): two more fit, the third does not.
    let second = store
        .outbox_append(&[limited("d"), limited("e"), limited("f")])
        .await
        .unwrap();
    assert!(matches!(second[0], Appended::Stored { .. }), "{second:?}");
    assert!(matches!(second[1], Appended::Stored { .. }), "{second:?}");
    assert_eq!(
        second[2],
        Appended::Full {
            messages: 4,
            bytes: 4
        }
    );
    // Another client's queue is its own.
    let mut other = limited("a");
    other.client = "other".into();
    let third = store.outbox_append(&[other]).await.unwrap();
    assert!(matches!(third[0], Appended::Stored { .. }), "{third:?}");
}
