//! Two replicas as their own processes against the simulators: one leads by a Lease, the other takes over when it is killed, handed over, cut off or slowed; no command is lost, run twice or answered twice, and no write of a deposed leader is accepted.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rocketops::sandbox::kube::{KubeSim, KubeSimConfig, Partition, WriteRecord, seed};
use serde_json::Value;
use tokio::process::Child;

use crate::support::{PATIENCE, World, bot_texts, eventually};
use rocketops::bench::ha::deposed_writes as deposed_writes_accepted;

/// The bot's own namespace in these tests.
const NS: &str = "rocketops";
/// Lease timings scaled down from 15/10/2 s.
const LEASE: &str = "3s";
const RENEW: &str = "2s";
const RETRY: &str = "500ms";
/// The replicas' audit key.
const AUDIT_KEY: &str = "an-audit-key-for-the-ha-tests-0123456789";

/// A world of two replicas' worth: chat, a cluster with `test`, and the replicas' config file.
struct Pair {
    w: World,
    cfg: PathBuf,
}

impl Pair {
    async fn new() -> Pair {
        let mut w = World::new().await;
        let kube = KubeSim::start(KubeSimConfig {
            pod_ready_after: Duration::from_millis(40),
            tick: Duration::from_millis(20),
            ..Default::default()
        })
        .await
        .expect("kube simulator starts");
        kube.seed_environments(&["test"]).expect("seed");
        kube.create(
            "namespaces",
            "",
            serde_json::json!({"metadata": {"name": NS}}),
        )
        .expect("the bot's namespace");
        kube.write_kubeconfig(&w.kubeconfig(), &["test"])
            .expect("kubeconfig");
        w.kube = Some(kube);
        let cfg = w.dir.path().join("ha.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"[bot]
store_path = "{store}"
[telemetry]
listen = "127.0.0.1:0"
[rocketchat]
url = "{rc}"
username = "rocketops"
rooms = ["ops"]
reconnect_min = "50ms"
reconnect_max = "200ms"
[ha]
store = "kubernetes"
kubeconfig = "{kc}"
context = "test"
namespace = "{NS}"
lease_duration = "{LEASE}"
renew_deadline = "{RENEW}"
retry_period = "{RETRY}"
[policy]
rate_burst = 1000
rate_per_minute = 60000
[environments.test]
kubeconfig = "{kc}"
context = "test"
image = "{repo}"
[[environments.test.policy.allow]]
commands = ["*"]
roles = ["ops"]
"#,
                store = w.store_path().display(),
                rc = w.sim.url(),
                kc = w.kubeconfig().display(),
                repo = seed::ROCKETCHAT_REPO,
            ),
        )
        .unwrap();
        Pair { w, cfg }
    }

    fn kube(&self) -> &KubeSim {
        self.w.kube()
    }

    /// Starts a replica as pod `pod` (its log in the test's folder).
    fn spawn(&self, pod: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.w.dir.path().join(format!("{pod}.log")))
            .unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
            .args(["run", "--config"])
            .arg(&self.cfg)
            .env("POD_NAME", pod)
            .env("ROCKETOPS_RC_PASSWORD", "rocketops")
            .env("ROCKETOPS_AUDIT_KEY", AUDIT_KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// `rocketops SUBCOMMAND... --config` the replicas' file, with their secrets: success and
    /// standard output, standard error after it.
    async fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
            .args(args)
            .arg("--config")
            .arg(&self.cfg)
            .env("ROCKETOPS_RC_PASSWORD", "rocketops")
            .env("ROCKETOPS_AUDIT_KEY", AUDIT_KEY)
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The pod holding the Lease, if any.
    fn holder(&self) -> Option<String> {
        let lease = self.kube().get("leases", NS, "rocketops-leader").ok()?;
        let id = lease["spec"]["holderIdentity"].as_str()?.to_string();
        (!id.is_empty()).then(|| rocketops::ha::pod_of(&id).to_string())
    }

    async fn wait_leader(&self, pod: &str) {
        eventually(
            &format!("{pod} leads"),
            Duration::from_millis(50),
            || async {
                (self.holder().as_deref() == Some(pod) && self.w.sim.sessions_of("rocketops") > 0)
                    .then_some(())
            },
        )
        .await
    }

    /// The log of a replica, for failure messages.
    fn log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.w.dir.path().join(format!("{pod}.log"))).unwrap_or_default()
    }

    async fn ping(&self, tag: &str) {
        self.w
            .sim
            .post("alice", "#ops", &format!("/ping {tag}"))
            .unwrap();
        self.w
            .wait_for("#ops", tag, |m| {
                crate::support::count(m, &format!("pong {tag}")) == 1
            })
            .await;
    }

    /// The audit records in the state objects.
    fn audit(&self) -> Vec<Value> {
        let mut out: Vec<(u64, Value)> = Vec::new();
        for cm in self.kube().list("configmaps", Some(NS)) {
            let name = cm["metadata"]["name"].as_str().unwrap_or_default();
            if !name.starts_with("rocketops-audit-") {
                continue;
            }
            for (k, v) in cm["data"].as_object().into_iter().flatten() {
                let line: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
                out.push((k.parse().unwrap(), line));
            }
        }
        out.sort_by_key(|(seq, _)| *seq);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// The operation locks held, as the head object records them.
    fn locks_held(&self) -> usize {
        let head = self
            .kube()
            .get("configmaps", NS, "rocketops-state-0")
            .unwrap();
        let count = |field: &str| {
            head[field].as_object().map_or(0, |m| {
                m.keys().filter(|k| k.starts_with("op_locks.")).count()
            })
        };
        count("data") + count("binaryData")
    }

    fn image(&self) -> String {
        let d = self
            .kube()
            .get("deployments", "test", "rocketchat")
            .unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// The messages the bot posted that mention `what`.
fn bot_mentions(msgs: &[Value], what: &str) -> Vec<Value> {
    msgs.iter()
        .filter(|m| {
            m["u"]["username"] == "rocketops" && m["msg"].as_str().is_some_and(|t| t.contains(what))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_finishes_a_deploy_whose_leader_was_killed_editing_the_same_progress_message() {
    let p = Pair::new().await;
    let mut a = p.spawn("bot-a");
    p.wait_leader("bot-a").await;
    let _b = p.spawn("bot-b");
    // The new image cannot be pulled yet: the rollout waits, mid-operation.
    p.kube().set_known_tags(seed::ROCKETCHAT_REPO, &["6.5.0"]);
    p.w.sim.post("alice", "#ops", "/deploy test 7.0.0").unwrap();
    p.w.wait_for("#ops", "the deploy under way", |m| {
        bot_texts(m)
            .iter()
            .any(|t| t.starts_with("⏳") && t.contains("deploy test 7.0.0"))
    })
    .await;
    a.kill().await.unwrap();
    p.kube()
        .set_known_tags(seed::ROCKETCHAT_REPO, seed::KNOWN_TAGS);
    p.wait_leader("bot-b").await;
    let msgs =
        p.w.wait_for("#ops", "the deploy finished by the standby", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.starts_with("✅") && t.contains("deploy test 7.0.0"))
        })
        .await;
    let progress = bot_mentions(&msgs, "deploy test 7.0.0");
    assert_eq!(
        progress.len(),
        1,
        "one progress message, edited: {progress:#?}\n{}",
        p.log("bot-b")
    );
    assert!(p.image().ends_with(":7.0.0"), "{}", p.image());
    let deploys: Vec<Value> = p
        .audit()
        .into_iter()
        .filter(|e| {
            e["text"]
                .as_str()
                .is_some_and(|t| t.contains("deploy test 7.0.0"))
        })
        .collect();
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
    eventually("the lock released", Duration::from_millis(50), || async {
        (p.locks_held() == 0).then_some(())
    })
    .await;
    assert_eq!(deposed_writes_accepted(&p.kube().write_log()), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_posted_during_a_sigterm_handover_is_answered_exactly_once() {
    let p = Pair::new().await;
    let a = p.spawn("bot-a");
    p.wait_leader("bot-a").await;
    let _b = p.spawn("bot-b");
    p.ping("before").await;
    let pid = a.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    p.w.sim.post("alice", "#ops", "/ping during").unwrap();
    let out = tokio::time::timeout(PATIENCE, a.wait_with_output())
        .await
        .expect("the leader stops on SIGTERM")
        .unwrap();
    assert!(out.status.success(), "{}", p.log("bot-a"));
    p.wait_leader("bot-b").await;
    p.w.wait_for("#ops", "the answer", |m| {
        crate::support::count(m, "pong during") == 1
    })
    .await;
    p.ping("after").await;
    let msgs = p.w.sim.messages("#ops").unwrap();
    assert_eq!(crate::support::count(&msgs, "pong during"), 1);
    assert!(
        !bot_texts(&msgs)
            .iter()
            .any(|t| t.contains("I restarted while handling")),
        "{:#?}",
        bot_texts(&msgs)
    );
    assert!(p.log("bot-a").contains("handed over"), "{}", p.log("bot-a"));
    assert_eq!(deposed_writes_accepted(&p.kube().write_log()), vec![]);
    // The audit chain, kept across both terms, verifies from the command line beside the leader.
    let (ok, said) = p.cli(&["audit", "verify"]).await;
    assert!(ok, "{said}");
    assert!(said.contains("keyed chain verified"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_stops_within_the_renew_deadline_and_none_of_its_writes_is_accepted_after()
 {
    let p = Pair::new().await;
    let mut a = p.spawn("bot-a");
    p.wait_leader("bot-a").await;
    let _b = p.spawn("bot-b");
    p.ping("before").await;
    p.kube().partition("bot-a", Some(Partition::Drop));
    let cut = tokio::time::Instant::now();
    let status = tokio::time::timeout(PATIENCE, a.wait())
        .await
        .expect("the cut-off leader stops")
        .unwrap();
    let stopped = cut.elapsed();
    // Its chat socket stayed up; it stopped because it could not renew.
    assert_eq!(
        status.code(),
        Some(rocketops::ha::run::EXIT_LOST),
        "{}",
        p.log("bot-a")
    );
    assert!(
        stopped <= Duration::from_millis(2000 + 700),
        "stopped after {stopped:?} (renew deadline 2 s)"
    );
    p.wait_leader("bot-b").await;
    p.ping("after").await;
    p.kube().partition("bot-a", None);
    // Restarted as a standby after the partition heals, it does not take over.
    let _a2 = p.spawn("bot-a");
    p.ping("healed").await;
    assert_eq!(p.holder().as_deref(), Some("bot-b"));
    let log = p.kube().write_log();
    assert_eq!(deposed_writes_accepted(&log), vec![]);
    let a_after: Vec<&WriteRecord> = log
        .iter()
        .filter(|r| r.agent.contains("bot-a_") && r.resource == "configmaps")
        .filter(|r| (200..300).contains(&r.status))
        .filter(|r| {
            r.epoch.as_deref().and_then(|e| e.parse::<u64>().ok())
                < log
                    .iter()
                    .filter(|x| x.agent.contains("bot-b") && x.epoch.is_some())
                    .filter_map(|x| x.epoch.as_deref()?.parse::<u64>().ok())
                    .max()
        })
        .filter(|r| {
            r.seq
                > log
                    .iter()
                    .find(|x| x.agent.contains("bot-b") && x.epoch.is_some())
                    .map_or(u64::MAX, |x| x.seq)
        })
        .collect();
    assert!(a_after.is_empty(), "{a_after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_shorter_than_the_renew_deadline_changes_no_leader_and_a_longer_one_changes_it_once()
 {
    let p = Pair::new().await;
    let mut a = p.spawn("bot-a");
    p.wait_leader("bot-a").await;
    let _b = p.spawn("bot-b");
    p.ping("before").await;
    let transitions = |p: &Pair| {
        p.kube()
            .get("leases", NS, "rocketops-leader")
            .ok()
            .and_then(|l| l["spec"]["leaseTransitions"].as_u64())
            .unwrap_or(0)
    };
    let before = transitions(&p);
    // Each request of the leader takes 600 ms: renewals still fit in the 2 s deadline.
    p.kube()
        .set_agent_delay("bot-a", Duration::from_millis(600));
    p.ping("slow").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(p.holder().as_deref(), Some("bot-a"), "{}", p.log("bot-a"));
    assert_eq!(transitions(&p), before);
    // A stall longer than the deadline: exactly one change of leader.
    p.kube().set_agent_delay("bot-a", Duration::from_secs(5));
    tokio::time::timeout(PATIENCE, a.wait())
        .await
        .expect("the stalled leader stops")
        .unwrap();
    p.kube().set_agent_delay("bot-a", Duration::ZERO);
    p.wait_leader("bot-b").await;
    p.ping("after").await;
    assert_eq!(transitions(&p), before + 1);
    let msgs = p.w.sim.messages("#ops").unwrap();
    for tag in ["before", "slow", "after"] {
        assert_eq!(
            crate::support::count(&msgs, &format!("pong {tag}")),
            1,
            "{tag}"
        );
    }
    assert_eq!(deposed_writes_accepted(&p.kube().write_log()), vec![]);
}

/// Where a replica serves /healthz /readyz /metrics, from its log.
async fn telemetry_of(p: &Pair, pod: &str) -> String {
    eventually(
        &format!("{pod} serves its health"),
        Duration::from_millis(50),
        || async {
            p.log(pod)
                .lines()
                .find(|l| l.contains("serving /healthz"))
                .and_then(|l| l.split("addr=").nth(1))
                .map(|a| format!("http://{}", a.split_whitespace().next().unwrap_or_default()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_are_ready_the_metrics_say_which_leads_and_status_names_the_leader_pod() {
    let p = Pair::new().await;
    let _a = p.spawn("bot-a");
    p.wait_leader("bot-a").await;
    let _b = p.spawn("bot-b");
    let http = reqwest::Client::new();
    for (pod, leading) in [("bot-a", 1), ("bot-b", 0)] {
        let base = telemetry_of(&p, pod).await;
        let ready = eventually(
            &format!("{pod} ready"),
            Duration::from_millis(50),
            || async {
                let r = http.get(format!("{base}/readyz")).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
        assert_eq!(ready, ());
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l == format!("rocketops_leader {leading}")),
            "{pod}: {metrics}"
        );
        assert!(
            metrics.contains("rocketops_leader_transitions_total"),
            "{metrics}"
        );
    }
    p.w.sim.post("alice", "#ops", "/status").unwrap();
    let msgs =
        p.w.wait_for("#ops", "status", |m| {
            bot_texts(m)
                .iter()
                .any(|t| t.contains("Answered by the leader"))
        })
        .await;
    let status = bot_texts(&msgs).join("\n");
    assert!(status.contains("pod `bot-a`"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_while_no_replica_leads_is_answered_once_after_takeover() {
    let p = Pair::new().await;
    let mut a = p.spawn("bot-a");
    p.wait_leader("bot-a").await;
    p.ping("before").await;
    a.kill().await.unwrap();
    // Nobody leads: the command waits in the room.
    p.w.sim.post("alice", "#ops", "/ping nobody").unwrap();
    let _b = p.spawn("bot-b");
    p.wait_leader("bot-b").await;
    p.w.wait_for("#ops", "the caught-up answer", |m| {
        crate::support::count(m, "pong nobody") == 1
    })
    .await;
    p.ping("after").await;
    let msgs = p.w.sim.messages("#ops").unwrap();
    assert_eq!(crate::support::count(&msgs, "pong nobody"), 1);
    assert_eq!(crate::support::count(&msgs, "pong before"), 1);
}

#[test]
fn bench_ha_reports_takeover_times_and_zero_lost_doubled_or_deposed_as_one_json_object() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rocketops"))
        .args([
            "bench",
            "--ha",
            "--json",
            "--ha-commands",
            "10",
            "--ha-kills",
            "1",
            "--ha-partitions",
            "1",
            "--ha-delays",
            "2",
            "--ha-seed",
            "3",
        ])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    for field in [
        "lost",
        "run_twice",
        "double_posts",
        "deposed_writes_accepted",
        "locks_held",
    ] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    assert_eq!(report["commands"], 10);
    assert_eq!(report["kills"], 1);
    assert_eq!(report["partitions"], 1);
    // A kill, a partition and the long slowdown each changed the leader once.
    assert_eq!(report["takeovers"], 3, "{report}");
    let p50 = report["takeover_p50_ms"].as_u64().unwrap();
    let p99 = report["takeover_p99_ms"].as_u64().unwrap();
    // Lease 3 s: a standby takes over as it expires, plus reading the state.
    assert!((1000..=4500).contains(&p50) && p50 <= p99, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_stops_when_it_wakes_and_none_of_its_writes_is_accepted() {
    let p = Pair::new().await;
    let mut a = p.spawn("bot-a");
    p.wait_leader("bot-a").await;
    let _b = p.spawn("bot-b");
    p.ping("before").await;
    let pid = a.id().unwrap().to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
    };
    // A pause the process cannot see coming (a stop-the-world stall, a frozen VM).
    signal("-STOP");
    p.wait_leader("bot-b").await;
    p.ping("while-frozen").await;
    signal("-CONT");
    let status = tokio::time::timeout(PATIENCE, a.wait())
        .await
        .expect("the woken leader stops")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(rocketops::ha::run::EXIT_LOST),
        "{}",
        p.log("bot-a")
    );
    p.ping("after").await;
    assert_eq!(p.holder().as_deref(), Some("bot-b"));
    assert_eq!(deposed_writes_accepted(&p.kube().write_log()), vec![]);
    let msgs = p.w.sim.messages("#ops").unwrap();
    for tag in ["before", "while-frozen", "after"] {
        assert_eq!(
            crate::support::count(&msgs, &format!("pong {tag}")),
            1,
            "{tag}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_tries_the_lease_and_the_state_objects_and_names_the_role_when_forbidden()
 {
    let p = Pair::new().await;
    let check = || p.cli(&["check-config", "--online"]);
    let (ok, said) = check().await;
    assert!(ok, "{said}");
    assert!(said.contains("kubernetes state (online):"), "{said}");
    assert!(
        said.contains("not there yet: the first replica creates it"),
        "{said}"
    );
    assert!(said.contains("allowed (dry run)"), "{said}");
    // Nothing was made.
    assert!(p.kube().get("leases", NS, "rocketops-leader").is_err());
    assert!(p.kube().list("configmaps", Some(NS)).is_empty());
    p.kube().revoke_permission("configmaps", "create");
    let (ok, said) = check().await;
    assert!(!ok, "{said}");
    assert!(
        said.lines().any(|l| l.contains("FAIL")
            && l.contains("state: create")
            && l.contains("manifests/ha/role.yaml")),
        "{said}"
    );
}
