//! The README's example, run as written: both simulators started, a message posted and read back, an environment seeded and its objects read.

use rocketops_sim::kube::{KubeSim, KubeSimConfig};
use rocketops_sim::rocketchat::{RocketChatSim, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_starts_both_simulators_and_reads_back_what_it_wrote() {
    // Rocket.Chat: seeded users and channels on a free loopback port.
    let chat = RocketChatSim::start(SimConfig::default()).await.unwrap();
    assert!(chat.url().starts_with("http://127.0.0.1:"));
    chat.post("alice", "#ops", "hello from a test").unwrap();
    let texts: Vec<String> = chat
        .messages("#ops")
        .unwrap()
        .iter()
        .filter_map(|m| m["msg"].as_str().map(str::to_string))
        .collect();
    assert!(texts.iter().any(|t| t == "hello from a test"), "{texts:?}");

    // Kubernetes: an environment seeded, a kubeconfig for kubectl, objects read back.
    let kube = KubeSim::start(KubeSimConfig::default()).await.unwrap();
    kube.seed_environments(&["test"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, &["test"]).unwrap();
    assert!(
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .contains(&kube.url())
    );
    let deployment = kube.get("deployments", "test", "rocketchat").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);

    chat.stop();
    kube.stop();
}
