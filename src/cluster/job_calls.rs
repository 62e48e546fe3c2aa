//! The Job calls of a cluster: a Job from a CronJob or a template, owned by its operation; waiting for its end; its result and logs from the pod it owns.

use super::*;

impl Cluster {
    /// Creates a Job from a CronJob's template, as `kubectl create job NAME --from=cronjob/CJ`.
    pub async fn job_from_cronjob(
        &self,
        cronjob: &str,
        job_name: &str,
    ) -> Result<Job, ClusterError> {
        let job = self.cronjob_template(cronjob, job_name).await?;
        self.create_job(&job).await
    }

    /// As [`Cluster::job_from_cronjob`], for an operation: labelled with its number and mark
    /// (the operation then records its result; the watch that catalogues the CronJob's own runs
    /// leaves it alone), and adopted on a retry only when the mark matches.
    pub async fn job_from_cronjob_for_op(
        &self,
        cronjob: &str,
        job_name: &str,
        op: u64,
        mark: &str,
    ) -> Result<(), ClusterError> {
        let mut job = self.cronjob_template(cronjob, job_name).await?;
        self.create_owned_job(&mut job, op, mark).await
    }

    async fn cronjob_template(&self, cronjob: &str, job_name: &str) -> Result<Job, ClusterError> {
        let cj = self
            .api::<CronJob>()
            .get(cronjob)
            .await
            .map_err(self.err(&format!("get cronjob {cronjob}")))?;
        Ok(jobs::job_from_cronjob(&cj, job_name))
    }

    /// Creates an operation's Job, labelled with its number and mark. A Job of that name that
    /// already exists is this operation's own (a resumed step) only when it carries the same mark;
    /// anything else is [`ClusterError::NotOurs`], never a result.
    pub async fn create_owned_job(
        &self,
        job: &mut Job,
        op: u64,
        mark: &str,
    ) -> Result<(), ClusterError> {
        let labels = job.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(jobs::OPERATION_LABEL.into(), op.to_string());
        labels.insert(jobs::MARK_LABEL.into(), mark.to_string());
        let name = job.metadata.name.clone().unwrap_or_default();
        match self.create_job(job).await {
            Ok(_) => Ok(()),
            Err(ClusterError::AlreadyExists { .. }) => {
                let existing = self
                    .api::<Job>()
                    .get(&name)
                    .await
                    .map_err(self.err(&format!("get job {name}")))?;
                let theirs = existing
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(jobs::MARK_LABEL));
                if !mark.is_empty() && theirs.map(String::as_str) == Some(mark) {
                    Ok(())
                } else {
                    Err(ClusterError::NotOurs {
                        name,
                        namespace: self.namespace.clone(),
                    })
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn create_job(&self, job: &Job) -> Result<Job, ClusterError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let action = format!("create job {name}");
        retrying(|| async {
            self.api::<Job>()
                .create(&PostParams::default(), job)
                .await
                .map_err(self.err(&action))
        })
        .await
    }

    /// Follows a Job to `Complete` or `Failed` and reads its result.
    pub async fn wait_job(&self, name: &str, limit: Duration) -> Result<JobResult, ClusterError> {
        let api = self.api::<Job>();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        let mut refused = 0;
        let deadline = tokio::time::Instant::now() + limit;
        // With the uid of the Job that ended: only pods it controls carry its result.
        let (end, uid) = loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = tokio::time::sleep_until(deadline) => return Err(ClusterError::TimedOut { what: format!("job {name}"), secs: limit.as_secs() }),
            };
            match event {
                Some(Ok(watcher::Event::Apply(j))) | Some(Ok(watcher::Event::InitApply(j))) => {
                    if let Some(end) = jobs::job_end(&j) {
                        break (end, j.metadata.uid.clone().unwrap_or_default());
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    return Err(ClusterError::NotFound {
                        what: format!("job {name} (deleted while running)"),
                        namespace: self.namespace.clone(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let action = format!("watch job {name}");
                    if let Some(lasting) = self.lasting_watch_error(&e, &action, &mut refused) {
                        return Err(lasting);
                    }
                    tracing::warn!(error = %e, "job watch interrupted; resuming after a backoff")
                }
                None => {
                    return Err(ClusterError::Unavailable {
                        action: format!("watch job {name}"),
                        message: "watch ended".into(),
                    });
                }
            }
        };
        let last = self.newest_job_pod(name, &uid).await?;
        let (exit_code, message) = last
            .as_ref()
            .and_then(jobs::termination)
            .map(|(c, _, m)| (Some(c), m))
            .unwrap_or((None, String::new()));
        let mut log_tail = Vec::new();
        if matches!(end, JobEnd::Failed { .. })
            && let Some(pod) = last.and_then(|p| p.metadata.name)
        {
            log_tail = self.pod_log_tail(&pod, 20).await.unwrap_or_default();
        }
        Ok(JobResult {
            end,
            message: crate::redact::redact(&message),
            exit_code,
            log_tail,
        })
    }

    /// The newest pod of a Job (the one whose result counts): found by the Job's name label,
    /// kept only when the Job with `uid` controls it. Anyone who may create pods can put a
    /// Job's name label on one; only the Job controller makes pods whose owner is the Job's uid.
    async fn newest_job_pod(&self, job: &str, uid: &str) -> Result<Option<Pod>, ClusterError> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
            .await
            .map_err(self.err("list pods"))?;
        let (owned, strangers): (Vec<Pod>, Vec<Pod>) = pods
            .items
            .into_iter()
            .partition(|p| jobs::pod_of_job(p, uid));
        if !strangers.is_empty() {
            tracing::warn!(
                job,
                pods = ?strangers.iter().filter_map(|p| p.metadata.name.as_deref()).collect::<Vec<_>>(),
                "pods carry this Job's name label but the Job does not own them; their results are ignored"
            );
        }
        Ok(owned
            .into_iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0)))
    }

    /// The uid of the Job `name` (listed by name: the bot's Role has no `get` on Jobs);
    /// `None` when there is no such Job.
    async fn job_uid(&self, name: &str) -> Result<Option<String>, ClusterError> {
        let found = self
            .api::<Job>()
            .list(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await
            .map_err(self.err("list jobs"))?;
        Ok(found.items.into_iter().find_map(|j| j.metadata.uid))
    }

    /// The uid of the CronJob `name`; `None` when there is none.
    pub async fn cronjob_uid(&self, name: &str) -> Result<Option<String>, ClusterError> {
        match self.api::<CronJob>().get(name).await {
            Ok(cj) => Ok(cj.metadata.uid),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(self.err(&format!("get cronjob {name}"))(e)),
        }
    }

    /// The last `lines` of a pod's log, redacted.
    async fn pod_log_tail(&self, pod: &str, lines: i64) -> Result<Vec<String>, ClusterError> {
        let params = LogParams {
            tail_lines: Some(lines),
            ..LogParams::default()
        };
        let text = self
            .api::<Pod>()
            .logs(pod, &params)
            .await
            .map_err(self.err("get pods/log"))?;
        Ok(crate::redact::outside(&text)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The termination message of the newest pod of the Job `job` with `uid` (its result),
    /// redacted.
    pub async fn job_message(&self, job: &str, uid: &str) -> Result<String, ClusterError> {
        Ok(self
            .newest_job_pod(job, uid)
            .await?
            .as_ref()
            .and_then(jobs::termination)
            .map(|(_, _, m)| crate::redact::redact(&m))
            .unwrap_or_default())
    }

    /// The last log lines of a Job's newest pod, redacted.
    pub async fn job_log_tail(&self, job: &str, lines: i64) -> Result<Vec<String>, ClusterError> {
        let Some(uid) = self.job_uid(job).await? else {
            return Ok(Vec::new());
        };
        match self
            .newest_job_pod(job, &uid)
            .await?
            .and_then(|p| p.metadata.name)
        {
            Some(pod) => self.pod_log_tail(&pod, lines).await,
            None => Ok(Vec::new()),
        }
    }
}
