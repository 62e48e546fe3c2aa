//! The Kubernetes simulator's per-client faults for the high-availability tests: one client cut off from the API (or slowed) while another is not, and a write log saying who wrote what with which epoch.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Config};
use rocketops::sandbox::kube::{KubeSim, KubeSimConfig, Partition};

/// A client of `sim` whose User-Agent names `agent`, without the client's own retries (so that a
/// refused request shows at once).
async fn client(sim: &KubeSim, agent: &str) -> Client {
    rocketops::tls::install_crypto_provider();
    let mut cfg = Config::new(sim.url().parse().unwrap());
    cfg.default_namespace = "test".into();
    cfg.default_retry = false;
    cfg.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_str(&format!("rocketops/0.1.0 ({agent})")).unwrap(),
    ));
    Client::try_from(cfg).unwrap()
}

fn config_map(name: &str, epoch: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": {"rocketops.io/epoch": epoch}},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_client_is_cut_off_while_the_other_is_not_and_the_write_log_names_both() {
    let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
    sim.seed_environments(&["test"]).unwrap();
    let a: Api<ConfigMap> = Api::namespaced(client(&sim, "bot-a").await, "test");
    let b: Api<ConfigMap> = Api::namespaced(client(&sim, "bot-b").await, "test");
    a.create(&PostParams::default(), &config_map("from-a", "1"))
        .await
        .unwrap();

    // Rejected: bot-a's requests get 503 at once; bot-b carries on.
    sim.partition("bot-a", Some(Partition::Reject));
    let err = a.list(&ListParams::default()).await.unwrap_err();
    assert!(
        err.to_string().contains("503") || err.to_string().contains("partition"),
        "{err}"
    );
    b.create(&PostParams::default(), &config_map("from-b", "2"))
        .await
        .unwrap();

    // Dropped: bot-a's write hangs and is never applied, even after the partition heals.
    sim.partition("bot-a", Some(Partition::Drop));
    let lost = tokio::time::timeout(
        Duration::from_millis(500),
        a.create(&PostParams::default(), &config_map("lost", "1")),
    )
    .await;
    assert!(lost.is_err(), "a dropped request is not answered");
    sim.partition("bot-a", None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        sim.get("configmaps", "test", "lost").is_err(),
        "never applied"
    );
    a.list(&ListParams::default()).await.unwrap();

    // Slowed: only bot-a waits.
    sim.set_agent_delay("bot-a", Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    b.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    a.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    // The log: who wrote what, with which epoch, and whether it was accepted.
    let log = sim.write_log();
    let accepted: Vec<(String, String, Option<String>)> = log
        .iter()
        .filter(|w| w.accepted())
        .map(|w| {
            let who = if w.agent.contains("bot-a") { "a" } else { "b" };
            (who.to_string(), w.name.clone(), w.epoch.clone())
        })
        .collect();
    assert!(
        accepted.contains(&("a".into(), "from-a".into(), Some("1".into()))),
        "{log:?}"
    );
    assert!(
        accepted.contains(&("b".into(), "from-b".into(), Some("2".into()))),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|w| w.name == "lost" && w.accepted()),
        "{log:?}"
    );
    sim.stop();
}
