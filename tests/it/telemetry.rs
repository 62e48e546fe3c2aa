//! Health, readiness and metrics as an operator's monitoring sees them.

use std::time::Duration;

use crate::support::{World, bot_texts};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    rocketops::tls::install_crypto_provider();
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn until_status(addr: std::net::SocketAddr, path: &str, want: u16) -> String {
    crate::support::eventually(
        &format!("{path} to answer {want}"),
        Duration::from_millis(20),
        || async {
            let (code, body) = get(addr, path).await;
            (code == want).then_some(body)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_rocket_chat_login_and_turns_unready_when_the_connection_drops() {
    let mut w = World::new().await;
    w.sim.refuse_connections_for(Duration::from_millis(1500));
    let config = w.config();
    let addr = w.launch_bot(config).await;
    assert_eq!(
        get(addr, "/healthz").await.0,
        200,
        "alive while not yet ready"
    );
    let body = until_status(addr, "/readyz", 503).await;
    assert!(body.contains("not connected to Rocket.Chat"), "{body}");
    until_status(addr, "/readyz", 200).await;
    w.sim.refuse_connections_for(Duration::from_millis(1500));
    w.sim.drop_connections();
    until_status(addr, "/readyz", 503).await;
    until_status(addr, "/readyz", 200).await;
    w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_commands_operations_rollouts_and_the_connection() {
    let mut w = World::with_cluster().await;
    w.start_bot().await;
    w.sim.post("alice", "#ops", "/ping").unwrap();
    w.sim.post("bob", "#ops", "/deploy prod v3.1").unwrap();
    w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    w.wait_for("#ops", "the deploy", |m| {
        bot_texts(m).iter().any(|t| t.starts_with("✅"))
    })
    .await;
    w.sim.post("alice", "#ops", "/backup now test").unwrap();
    w.wait_for("#ops", "the backup", |m| {
        bot_texts(m).iter().filter(|t| t.starts_with("✅")).count() == 2
    })
    .await;
    crate::commands::shorten_deadline(&w, "test").await;
    w.sim.post("alice", "#ops", "/deploy test 9.9.9").unwrap();
    w.wait_for("#ops", "the failed deploy", |m| {
        bot_texts(m).iter().any(|t| t.starts_with("↩️"))
    })
    .await;
    w.wait_for("#alerts", "the alert", |m| !bot_texts(m).is_empty())
        .await;
    let (code, text) = get(w.telemetry.unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    for series in [
        "rocketops_commands_total{command=\"ping\",outcome=\"done\"}",
        "rocketops_commands_total{command=\"deploy\",outcome=\"refused\"}",
        "rocketops_commands_total{command=\"deploy\",outcome=\"started\"}",
        "rocketops_operation_duration_seconds_count{command=\"deploy\",state=\"succeeded\"}",
        "rocketops_rollouts_total{env=\"test\",outcome=\"complete\"}",
        "rocketops_chat_reconnects_total",
        "rocketops_chat_request_seconds_count",
        "rocketops_backup_size_bytes{env=\"test\"} 48213377",
        "rocketops_backup_timestamp_seconds{env=\"test\"}",
        "rocketops_alerts_total{env=\"test\",severity=\"critical\"}",
        "rocketops_rollouts_total{env=\"test\",outcome=\"failed\"}",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    w.stop_bot().await;
}
