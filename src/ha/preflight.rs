//! `check-config --online` with the state in Kubernetes: reaches the bot's own namespace and tries, changing nothing, what the replicas do there (read and create the Lease, list and create state objects).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use super::state::SELECTOR;
use crate::chat::rocketchat::preflight::{Report, Verdict};
use crate::config::HaConfig;

/// Each call's bound.
const CALL: Duration = Duration::from_secs(10);

/// Pure: a check's verdict from a call's outcome. A dry-run create that finds the object there
/// (409) was allowed: authorization comes first.
fn verdict<T>(r: &Result<T, kube::Error>) -> (Verdict, String) {
    match r {
        Ok(_) => (Verdict::Ok, String::new()),
        Err(kube::Error::Api(s)) if s.code == 409 => (Verdict::Ok, String::new()),
        Err(kube::Error::Api(s)) if s.code == 403 => (
            Verdict::Failed,
            format!(
                "forbidden ({}): the Role in manifests/ha/role.yaml grants it",
                s.message
            ),
        ),
        Err(e) => (Verdict::Failed, e.to_string()),
    }
}

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(CALL, f).await.unwrap_or_else(|_| {
        Err(kube::Error::Service(
            format!("no answer within {} s", CALL.as_secs()).into(),
        ))
    })
}

/// Checks the bot's own namespace as `[ha]` names it.
pub async fn check(cfg: &HaConfig) -> Report {
    let mut report = Report::default();
    let (client, ns) = match super::client(cfg, &super::user_agent("check-config")).await {
        Ok(c) => c,
        Err(e) => {
            report.push("cluster", Verdict::Failed, e.to_string());
            return report;
        }
    };
    report.push("namespace", Verdict::Ok, ns.clone());
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let read = bounded(leases.get_opt(&cfg.lease_name)).await;
    let (v, why) = verdict(&read);
    let detail = match &read {
        Ok(Some(l)) => match l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) {
            Some(h) if !h.is_empty() => format!("{} held by {}", cfg.lease_name, super::pod_of(h)),
            _ => format!("{} free", cfg.lease_name),
        },
        Ok(None) => format!(
            "{} not there yet: the first replica creates it",
            cfg.lease_name
        ),
        Err(_) => why,
    };
    report.push("lease: read", v, detail);
    let probe = Lease {
        metadata: ObjectMeta {
            name: Some(cfg.lease_name.clone()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    };
    let (v, why) = verdict(&bounded(leases.create(&dry, &probe)).await);
    report.push(
        "lease: create",
        v,
        if why.is_empty() {
            "allowed (dry run)".into()
        } else {
            why
        },
    );
    let maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let listed = bounded(maps.list(&ListParams::default().labels(SELECTOR))).await;
    let (v, why) = verdict(&listed);
    let detail = match &listed {
        Ok(l) => format!("{} state objects", l.items.len()),
        Err(_) => why,
    };
    report.push("state: list", v, detail);
    let probe = ConfigMap {
        metadata: ObjectMeta {
            name: Some("rocketops-state-0".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let (v, why) = verdict(&bounded(maps.create(&dry, &probe)).await);
    report.push(
        "state: create",
        v,
        if why.is_empty() {
            "allowed (dry run)".into()
        } else {
            why
        },
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Result<(), kube::Error> {
        Err(kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "m".into(),
            ..kube::core::Status::default()
        })))
    }

    #[test]
    fn a_create_that_finds_the_object_was_allowed_and_a_forbidden_call_names_the_role() {
        assert_eq!(verdict(&status(409)).0, Verdict::Ok);
        let (v, why) = verdict(&status(403));
        assert_eq!(v, Verdict::Failed);
        assert!(why.contains("manifests/ha/role.yaml"), "{why}");
        assert_eq!(verdict(&status(500)).0, Verdict::Failed);
        assert_eq!(verdict(&Ok::<(), kube::Error>(())).0, Verdict::Ok);
    }
}
