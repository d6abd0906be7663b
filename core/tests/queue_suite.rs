//! One `Queue` suite, run against every backend: the local SQLite queue and
//! SQS (on the moto server `make test` starts). Each backend is made with a
//! redrive after 2 receives.

mod common;

use hourglass_core::queue::{CreateOptions, LocalQueue, Queue, SqsQueue, send_all};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// Receives until `n` messages arrived or `timeout` passed.
async fn receive_n(
    q: &dyn Queue,
    n: usize,
    visibility: Duration,
    timeout: Duration,
) -> Vec<hourglass_core::queue::Message> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(q.receive(n - got.len(), Duration::from_secs(1), visibility).await.unwrap());
    }
    got
}

async fn suite(q: &dyn Queue) {
    // Both suites' queues dead-letter after 2 receives (their redrive).
    assert_eq!(q.max_receives().await.unwrap(), Some(2));
    // Batch send (more than one batch), receive all, ack all.
    let bodies: Vec<String> = (0..15).map(|i| format!("m{i}")).collect();
    send_all(q, &bodies).await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (15, 0), "{depth:?}");
    let got = receive_n(q, 15, Duration::from_secs(60), LONG).await;
    let seen: BTreeSet<String> = got.iter().map(|m| m.body.clone()).collect();
    assert_eq!(seen, bodies.iter().cloned().collect());
    assert!(got.iter().all(|m| m.receive_count == 1));
    assert_eq!(q.depth().await.unwrap().in_flight, 15);
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    for chunk in receipts.chunks(10) {
        assert!(q.ack_batch(chunk).await.unwrap().failed.is_empty());
    }
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0), "{depth:?}");

    // Visibility expiry redelivers, with a higher receive count.
    send_all(q, &["expire".to_string()]).await.unwrap();
    let first = receive_n(q, 1, Duration::from_secs(1), LONG).await;
    assert_eq!(first.len(), 1);
    let again = receive_n(q, 1, Duration::from_secs(60), LONG).await;
    assert_eq!(again.len(), 1, "an expired lease is redelivered");
    assert_eq!(again[0].body, "expire");
    assert_eq!(again[0].receive_count, 2);
    q.ack_batch(&[again[0].receipt.clone()]).await.unwrap();

    // Extend keeps a message hidden past its first lease.
    send_all(q, &["extend".to_string()]).await.unwrap();
    let held = receive_n(q, 1, Duration::from_secs(1), LONG).await;
    q.extend(&held[0].receipt, Duration::from_secs(60)).await.unwrap();
    let none = q.receive(1, Duration::from_secs(3), Duration::from_secs(60)).await.unwrap();
    assert!(none.is_empty(), "extended message was redelivered: {none:?}");
    // Release makes it visible at once.
    q.release(&held[0].receipt).await.unwrap();
    let back = receive_n(q, 1, Duration::from_secs(60), Duration::from_secs(5)).await;
    assert_eq!(back.len(), 1, "a released message is visible at once");
    q.ack_batch(&[back[0].receipt.clone()]).await.unwrap();

    // Dead-lettered by the queue after max receives (2).
    send_all(q, &["poison".to_string()]).await.unwrap();
    for _ in 0..2 {
        assert_eq!(receive_n(q, 1, Duration::from_secs(1), LONG).await.len(), 1);
    }
    let deadline = Instant::now() + LONG;
    let mut redelivered = Vec::new();
    while Instant::now() < deadline {
        redelivered.extend(q.receive(1, Duration::from_secs(1), Duration::from_secs(1)).await.unwrap());
        if q.depth().await.unwrap().dead == Some(1) {
            break;
        }
    }
    assert!(redelivered.is_empty(), "delivered past max receives: {redelivered:?}");
    assert_eq!(q.depth().await.unwrap().dead, Some(1));

    // Dead-lettered explicitly, with a reason.
    send_all(q, &["bad".to_string()]).await.unwrap();
    let bad = receive_n(q, 1, Duration::from_secs(60), LONG).await;
    q.dead_letter(&bad[0], "not a task").await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight, depth.dead), (0, 0, Some(2)), "{depth:?}");

    // Both dead letters are peeked, with their reasons, and left there.
    for _ in 0..2 {
        let mut peeked = q.peek_dead_letters(10).await.unwrap();
        peeked.sort_by(|a, b| a.body.cmp(&b.body));
        let got: Vec<(&str, bool)> = peeked.iter().map(|d| (d.body.as_str(), d.reason == "not a task")).collect();
        assert_eq!(got.len(), 2, "{peeked:?}");
        assert_eq!(got[0], ("bad", true), "{peeked:?}");
        assert_ne!(peeked[0].id, peeked[1].id);
    }
    assert_eq!(q.peek_dead_letters(1).await.unwrap().len(), 1);
    assert_eq!(q.depth().await.unwrap().dead, Some(2));
}

#[tokio::test]
async fn local_queue_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&LocalQueue::open(dir.path().join("q.db"), Some(2)).unwrap()).await;
}

#[tokio::test]
async fn sqs_queue_passes_the_suite() {
    common::moto();
    let name = common::unique("suite");
    let url = SqsQueue::create(&name, &CreateOptions { visibility_timeout: Duration::from_secs(30), max_receives: 2 })
        .await
        .unwrap();
    assert!(created_url_ok(&url.dead_letter_url) && url.max_receives == 2, "{url:?}");
    suite(&SqsQueue::new(url.url)).await;
    // sqs://name resolves in the current account and region.
    let by_name = SqsQueue::new(format!("sqs://{name}"));
    assert_eq!(by_name.depth().await.unwrap().visible, 0);
}

#[tokio::test]
async fn sqs_errors_name_the_queue() {
    common::moto();
    let q = SqsQueue::new("sqs://no-such-queue-hourglass");
    let err = q.depth().await.unwrap_err();
    assert!(err.to_string().contains("sqs://no-such-queue-hourglass"), "{err}");
    assert!(err.is_not_found(), "{err}");
}

fn created_url_ok(url: &str) -> bool {
    url.starts_with("http") && url.ends_with("-dlq")
}
