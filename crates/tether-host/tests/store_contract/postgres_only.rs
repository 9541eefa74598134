//! The PostgreSQL store's own checks (beside the shared contract): two
//! hosts at once, secrets sealed in its tables, and the lease fence on
//! outbox changes.

use std::sync::Arc;

use tether_host::store::outbox::{Appended, OutboxLimits, OutboxStatus};
use tether_host::store::{Secrets, StoreError};
use tether_host::{PgStore, Store};

use super::{change, m, pending_seqs, pg_database, record};

#[tokio::test]
async fn postgres_keeps_secrets_sealed_and_refuses_another_key() {
    use sqlx::Connection;
    let Some(url) = pg_database("sealed").await else {
        return;
    };
    let key = tether_host::store::SecretKey::generate();
    let store = PgStore::open_with(&url, Secrets::Sealed(key.clone()))
        .await
        .unwrap();
    store.insert(&record("k"), change("create")).await.unwrap();
    assert_eq!(
        store.get("k").await.unwrap().unwrap().password.as_deref(),
        Some("hunter2")
    );
    store.close().await;
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    let text: String = sqlx::query_scalar("SELECT url || password || headers FROM instances")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    for secret in ["hunter2", "secret-pw", "t0ken"] {
        assert!(
            !text.contains(secret),
            "{secret} stored in plaintext: {text}"
        );
    }
    assert!(text.contains("X-Plain"));
    let other = tether_host::store::SecretKey::generate();
    let refused = PgStore::open_with(&url, Secrets::Sealed(other)).await;
    assert!(
        matches!(refused, Err(StoreError::Secret(_))),
        "{:?}",
        refused.err()
    );
    let plain = PgStore::open_with(&url, Secrets::Plaintext).await;
    assert!(matches!(plain, Err(StoreError::Secret(_))));
}

#[tokio::test]
async fn postgres_two_hosts_share_limits_and_one_gap_free_event_log() {
    let Some(url) = pg_database("two_hosts").await else {
        return;
    };
    let a = Arc::new(PgStore::open_with(&url, Secrets::Plaintext).await.unwrap());
    let b = Arc::new(PgStore::open_with(&url, Secrets::Plaintext).await.unwrap());
    let limited = |host: &str, i: usize| {
        let mut msg = m(&format!("{host}-{i}"));
        msg.limits = OutboxLimits {
            max_messages: 50,
            ..Default::default()
        };
        msg
    };
    // Two hosts append to one client at once, 40 batches of 2 each.
    let mut tasks = Vec::new();
    for (name, store) in [("a", a.clone()), ("b", b.clone())] {
        tasks.push(tokio::spawn(async move {
            let mut stored = 0;
            for i in 0..40 {
                let r = store
                    .outbox_append(&[limited(name, 2 * i), limited(name, 2 * i + 1)])
                    .await
                    .unwrap();
                stored += r
                    .iter()
                    .filter(|r| matches!(r, Appended::Stored { .. }))
                    .count();
            }
            stored
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, 50, "the limit held across hosts");
    assert_eq!(a.outbox_stats("c").await.unwrap().pending, 50);
    // Both append events at once: every number once, none missing.
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                seqs.extend(
                    store
                        .events_append(&[
                            ("x".into(), i, "{}".into()),
                            ("x".into(), i, "{}".into()),
                        ])
                        .await
                        .unwrap(),
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<i64>>());
    let read: Vec<i64> = a
        .events_after(0, None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(read, all);
}

#[tokio::test]
async fn postgres_outbox_changes_need_the_clients_lease_once_fenced() {
    use sqlx::Connection;
    let Some(url) = pg_database("fence").await else {
        return;
    };
    let store = PgStore::open_with(&url, Secrets::Plaintext).await.unwrap();
    store.outbox_append(&[m("a"), m("b")]).await.unwrap();
    let seqs = pending_seqs(&store).await;
    store.fence_with("node-a");
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    // Nobody's lease, then another node's, then an expired one of ours:
    // the change is refused each time.
    for lease in [
        None,
        Some(("node-b", "now() + interval '5 s'")),
        Some(("node-a", "now() - interval '1 s'")),
    ] {
        if let Some((node, expires)) = lease {
            sqlx::query(&format!(
                "INSERT INTO leases (key, node_id, epoch, expires_at) VALUES ('c', $1, 1, {expires}) \
                 ON CONFLICT (key) DO UPDATE SET node_id = excluded.node_id, expires_at = excluded.expires_at"
            ))
            .bind(node)
            .execute(&mut raw)
            .await
            .unwrap();
        }
        store
            .outbox_mark(&seqs[..1], OutboxStatus::Done, None)
            .await
            .unwrap();
        assert_eq!(
            statuses(&store).await,
            [OutboxStatus::Pending, OutboxStatus::Pending],
            "lease {lease:?}"
        );
    }
    sqlx::query("UPDATE leases SET expires_at = now() + interval '5 s' WHERE key = 'c'")
        .execute(&mut raw)
        .await
        .unwrap();
    store
        .outbox_mark(&seqs[..1], OutboxStatus::Done, None)
        .await
        .unwrap();
    store
        .outbox_mark(&seqs[1..], OutboxStatus::InFlight, None)
        .await
        .unwrap();
    assert_eq!(
        statuses(&store).await,
        [OutboxStatus::Done, OutboxStatus::InFlight]
    );
    // Another node takes the lease: our requeue changes nothing.
    sqlx::query("UPDATE leases SET node_id = 'node-b' WHERE key = 'c'")
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(store.outbox_requeue("c").await.unwrap(), 0);
}

async fn statuses(store: &PgStore) -> Vec<OutboxStatus> {
    store
        .outbox_list("c", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.status)
        .collect()
}
