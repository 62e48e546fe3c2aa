//! Job templates really run: the PostgreSQL backup, verify and restore templates against a local PostgreSQL server, through the Kubernetes simulator's local Job runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use rocketops::sandbox::kube::runtime::LocalJobs;
use rocketops::sandbox::postgres::Postgres;
use serde_json::json;

use crate::support::World;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One statement's result, unaligned (`psql -At`).
fn sql(pg: &Postgres, q: &str) -> String {
    pg.sql(q).unwrap_or_else(|e| panic!("{e}"))
}

/// A PostgreSQL server, or a loud skip where none can be had; CI sets `ROCKETOPS_REQUIRE_REAL`
/// so that there a missing server fails instead.
pub fn postgres_or_skip(test: &str) -> Option<Postgres> {
    match Postgres::start() {
        Ok(pg) => Some(pg),
        Err(why) if std::env::var_os("ROCKETOPS_REQUIRE_REAL").is_some() => {
            panic!("{test} needs a PostgreSQL server: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n!!!!! SKIPPED {test}: it needs a local PostgreSQL server ({why}). Install Debian's `postgresql`; `.ci/run` does.\n"
            );
            None
        }
    }
}

/// A world whose `pg` environment's backups, verifies and restores run the PostgreSQL
/// templates for real against `pg`; the claim `pg-backup` is the folder `claim_dir`.
pub struct PgWorld {
    pub w: World,
    /// Holds the runtime's folder for as long as the world lives.
    _jobs: tempfile::TempDir,
    pub local: LocalJobs,
}

impl PgWorld {
    pub async fn start(pg: &Postgres, commands_dir: Option<&Path>) -> PgWorld {
        PgWorld::start_with(pg, commands_dir, None).await
    }

    /// As [`PgWorld::start`], copying backups to `s3` when given (the uploader runs for real too).
    pub async fn start_with(
        pg: &Postgres,
        commands_dir: Option<&Path>,
        s3: Option<&S3>,
    ) -> PgWorld {
        PgWorld::start_offsite(pg, commands_dir, s3, true, &|_| {}).await
    }

    /// As [`PgWorld::start_with`]; without `key_secret` the encryption key's Secret is missing.
    pub async fn start_offsite(
        pg: &Postgres,
        commands_dir: Option<&Path>,
        s3: Option<&S3>,
        key_secret: bool,
        tweak: &dyn Fn(&mut rocketops::config::EnvironmentConfig),
    ) -> PgWorld {
        let jobs = tempfile::tempdir().unwrap();
        let local = LocalJobs {
            images: vec!["postgres:*".into(), "rclone/rclone:*".into()],
            root: jobs.path().to_path_buf(),
            path: vec![pg.bin.clone()],
        };
        let mut w = World::with_cluster_running(Some(local.clone()), &["test", "prod", "pg"]).await;
        let uri = base64::engine::general_purpose::STANDARD.encode(pg.uri());
        w.kube()
            .create(
                "secrets",
                "pg",
                json!({"metadata": {"name": "pg"}, "type": "Opaque", "data": {"uri": uri}}),
            )
            .unwrap();
        w.kube()
            .create(
                "persistentvolumeclaims",
                "pg",
                json!({"metadata": {"name": "pg-backup"},
                       "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            )
            .unwrap();
        let mut c = w.config();
        let mut e = c.environments["test"].clone();
        e.namespace = Some("pg".into());
        e.context = Some("pg".into());
        if let Some(smoke) = e.smoke.as_mut() {
            smoke.url = w.kube().app_info_url("pg", "rocketchat");
        }
        e.backup_cronjob = "postgresql-backup".into();
        e.database = "pg".into();
        e.backup.engine = rocketops::config::DbEngine::Postgresql;
        e.backup.claim = Some("pg-backup".into());
        e.backup.secret = Some("pg".into());
        c.environments.insert("pg".into(), e);
        if let Some(dir) = commands_dir {
            c.bot.commands_dir = dir.to_path_buf();
        }
        tweak(c.environments.get_mut("pg").unwrap());
        if let Some(s3) = s3 {
            let secret = |name: &str, data: serde_json::Value| {
                let data: serde_json::Map<String, serde_json::Value> = data
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let v =
                            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
                        (k.clone(), json!(v))
                    })
                    .collect();
                w.kube()
                    .create(
                        "secrets",
                        "pg",
                        json!({"metadata": {"name": name}, "type": "Opaque", "data": data}),
                    )
                    .unwrap();
            };
            secret(
                "offsite-s3",
                json!({"access_key_id": "AKIAOFFSITETEST", "secret_access_key": "offsite-secret-access-key"}),
            );
            if key_secret {
                secret("offsite-key", json!({"key": OFFSITE_PASSPHRASE}));
            }
            let e = c.environments.get_mut("pg").unwrap();
            e.backup.offsite = Some(rocketops::config::OffsiteConfig {
                endpoint: s3.url(),
                bucket: BUCKET.into(),
                prefix: None,
                region: "us-east-1".into(),
                secret: "offsite-s3".into(),
                encryption_secret: "offsite-key".into(),
                image: Some("rclone/rclone:1.60".into()),
                verify: Default::default(),
            });
        }
        w.start_bot_with(c).await;
        PgWorld {
            w,
            _jobs: jobs,
            local,
        }
    }

    pub fn claim_dir(&self) -> PathBuf {
        self.local.claim_dir("pg", "pg-backup")
    }

    /// Sends `text` as alice in #ops and waits for the operation's final answer (a new one: an
    /// earlier run of the same command does not count).
    pub async fn run(&self, text: &str, confirm: bool) -> String {
        let echo = text.trim_start_matches('/').to_string();
        let finished = |t: &str| t.contains(&echo) && (t.starts_with("✅") || t.starts_with("❌"));
        let before = crate::support::bot_texts(&self.w.sim.messages("#ops").unwrap())
            .iter()
            .filter(|t| finished(t))
            .count();
        self.w.sim.post("alice", "#ops", text).unwrap();
        if confirm {
            self.w.confirm("alice", "#ops").await;
        }
        let msgs = self
            .w
            .wait_for("#ops", text, |m| {
                crate::support::bot_texts(m)
                    .iter()
                    .filter(|t| finished(t))
                    .count()
                    > before
            })
            .await;
        crate::support::bot_texts(&msgs)
            .into_iter()
            .filter(|t| finished(t))
            .nth(before)
            .unwrap_or_default()
    }
}

/// The bucket the off-site tests copy into, and the passphrase the copies are encrypted with.
const BUCKET: &str = "rocketops-offsite";
const OFFSITE_PASSPHRASE: &str = "correct horse battery staple";

/// A local S3-compatible server (moto in server mode) on a free loopback port; stopped when
/// dropped.
pub struct S3 {
    child: std::process::Child,
    pub port: u16,
}

impl S3 {
    pub fn start() -> Result<S3, String> {
        rocketops::tls::install_crypto_provider();
        if which("rclone").is_none() {
            return Err("rclone is not installed (the uploader the off-site Jobs run)".into());
        }
        let port = free_port();
        let mut cmd = match which("moto_server") {
            Some(server) => Command::new(server),
            None => {
                let python =
                    which("python3").ok_or("neither moto_server nor python3 is on PATH")?;
                let found = Command::new(&python)
                    .args(["-c", "import moto.server"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !found {
                    return Err("moto is not installed (pip install 'moto[server]')".into());
                }
                let mut c = Command::new(python);
                c.args(["-m", "moto.server"]);
                c
            }
        };
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("moto_server: {e}"))?;
        let s3 = S3 { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err("moto_server did not start listening within 20 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(s3)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.url()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// Every key in `bucket`.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let body = reqwest::get(format!("{}/{bucket}?list-type=2", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// An object's stored bytes, read with rclone (objects are private; listing is not).
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = Command::new("rclone")
            .args(["cat", &format!("store:{bucket}/{key}")])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_STORE_TYPE", "s3")
            .env("RCLONE_CONFIG_STORE_PROVIDER", "Other")
            .env("RCLONE_CONFIG_STORE_ENDPOINT", self.url())
            .env("RCLONE_CONFIG_STORE_ACCESS_KEY_ID", "test")
            .env("RCLONE_CONFIG_STORE_SECRET_ACCESS_KEY", "test")
            .output()
            .expect("rclone cat");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// An S3 server, or a loud skip (a failure under `ROCKETOPS_REQUIRE_REAL`).
pub fn s3_or_skip(test: &str) -> Option<S3> {
    match S3::start() {
        Ok(s3) => Some(s3),
        Err(why) if std::env::var_os("ROCKETOPS_REQUIRE_REAL").is_some() => {
            panic!("{test} needs a local S3 server and rclone: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n!!!!! SKIPPED {test}: {why}. `.ci/run` installs rclone (Debian) and moto (pip).\n"
            );
            None
        }
    }
}

/// The name of the backup a `backup now ENV` answer reports.
fn backed_up(done: &str, env: &str) -> String {
    done.split(&format!("{env} is backed up: `"))
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("no backup name in {done}"))
        .to_string()
}

/// A PostgreSQL server and an S3 server, or a loud skip (a failure under
/// `ROCKETOPS_REQUIRE_REAL`).
fn pg_and_s3_or_skip(test: &str) -> Option<(Postgres, S3)> {
    let pg = postgres_or_skip(test)?;
    let s3 = s3_or_skip(test)?;
    Some((pg, s3))
}

fn seed(pg: &Postgres) {
    pg.seed_sample().unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_postgresql_backup_is_verified_and_restored_over_data_changed_since() {
    let Some(pg) = postgres_or_skip("a_real_postgresql_backup_is_verified_and_restored") else {
        return;
    };
    seed(&pg);
    let mut p = PgWorld::start(&pg, None).await;
    let done = p.run("/backup now pg", false).await;
    assert!(done.starts_with("✅"), "{done}");
    let name = backed_up(&done, "pg");
    // The archive, its checksum and its manifest are on the volume, as pg_dump and the script
    // wrote them.
    let dir = p.claim_dir();
    let dump = std::fs::read(dir.join(format!("{name}.dump"))).expect("the dump");
    assert_eq!(&dump[..5], b"PGDMP", "a pg_dump custom-format archive");
    let manifest = std::fs::read_to_string(dir.join(format!("{name}.manifest.txt"))).unwrap();
    assert_eq!(manifest, "public.items 100\npublic.notes 7\n");
    let sum = std::fs::read_to_string(dir.join(format!("{name}.dump.sha256"))).unwrap();
    assert!(sum.ends_with(&format!("  {name}.dump\n")), "{sum}");
    // The catalog holds what the Job really reported.
    let list = {
        p.w.sim.post("alice", "#ops", "/backup list pg").unwrap();
        p.w.wait_bot_text("#ops", "the list", |t| {
            t.contains(&name) && !t.starts_with("✅")
        })
        .await
    };
    assert!(
        list.contains("107 rows") || list.contains("2 tables") || list.contains(&name),
        "{list}"
    );

    // The data changes after the backup.
    sql(&pg, "delete from items where id > 60");
    sql(&pg, "update notes set body = 'changed'");
    sql(&pg, "create table later (id int)");

    let verified = p.run("/verify pg", false).await;
    assert!(verified.starts_with("✅"), "{verified}");
    assert!(
        verified.contains("2 tables") && verified.contains("107"),
        "{verified}"
    );

    let restored = p.run("/restore pg latest", true).await;
    assert!(restored.starts_with("✅"), "{restored}");
    assert!(
        restored.contains(&format!("{name} of pg restored")),
        "{restored}"
    );
    assert_eq!(sql(&pg, "select count(*) from items"), "100");
    assert_eq!(
        sql(&pg, "select body from notes where id = 3"),
        "note \"3' with quotes"
    );
    // The safety backup taken first holds the changed data: 60 items.
    let safety = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".manifest.txt") && !f.starts_with(&name))
        .collect::<Vec<_>>();
    assert_eq!(safety.len(), 1, "{safety:?}");
    let safety = std::fs::read_to_string(dir.join(&safety[0])).unwrap();
    assert!(safety.contains("public.items 60\n"), "{safety}");
    p.w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_with_a_broken_flag_fails_its_backup_with_the_tools_own_error() {
    let Some(pg) = postgres_or_skip("a_template_with_a_broken_flag_fails_its_backup") else {
        return;
    };
    seed(&pg);
    let commands = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(commands.path().join("backup")).unwrap();
    let template = include_str!("../../commands/backup/postgresql-backup.yaml");
    assert!(template.contains("--format=custom"));
    std::fs::write(
        commands.path().join("backup/postgresql-backup.yaml"),
        template.replace("--format=custom", "--fromat=custom"),
    )
    .unwrap();
    let mut p = PgWorld::start(&pg, Some(commands.path())).await;
    let done = p.run("/backup now pg", false).await;
    assert!(done.starts_with("❌"), "{done}");
    let jobs = p.w.kube().list("pods", Some("pg"));
    let pod = jobs
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("postgresql-backup-")
        })
        .expect("the backup pod");
    assert_eq!(pod["status"]["phase"], "Failed");
    let log =
        p.w.kube()
            .pod_log("pg", pod["metadata"]["name"].as_str().unwrap())
            .join("\n");
    assert!(
        log.contains("unrecognized option") && log.contains("fromat"),
        "{log}"
    );
    assert!(
        !p.claim_dir().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".dump"))
    );
    p.w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_backup_volume_gone_postgresql_is_restored_from_the_encrypted_offsite_copy() {
    let test = "with_the_backup_volume_gone_postgresql_is_restored_from_the_offsite_copy";
    let Some((pg, s3)) = pg_and_s3_or_skip(test) else {
        return;
    };
    s3.create_bucket(BUCKET).await;
    seed(&pg);
    let mut p = PgWorld::start_with(&pg, None, Some(&s3)).await;
    let done = p.run("/backup now pg", false).await;
    assert!(done.starts_with("✅"), "{done}");
    let name = backed_up(&done, "pg");
    assert!(
        done.contains("✓ off-site copy")
            && done.contains(&format!("`{name}` copied to s3://{BUCKET}/pg/{name}")),
        "{done}"
    );
    // In the bucket: the archive, its checksum and its manifest, encrypted.
    let mut keys = s3.keys(BUCKET).await;
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("pg/{name}.dump.bin"),
            format!("pg/{name}.dump.sha256.bin"),
            format!("pg/{name}.manifest.txt.bin")
        ]
    );
    let stored = s3.get(BUCKET, &format!("pg/{name}.dump.bin"));
    assert!(stored.starts_with(b"RCLONE\0\0"), "rclone crypt's header");
    let plain = std::fs::read(p.claim_dir().join(format!("{name}.dump"))).unwrap();
    assert!(!stored.windows(5).any(|w| w == b"PGDMP") && stored.len() > plain.len());
    let manifest = s3.get(BUCKET, &format!("pg/{name}.manifest.txt.bin"));
    assert!(!String::from_utf8_lossy(&manifest).contains("public.items"));
    p.w.sim.post("alice", "#ops", "/backup list pg").unwrap();
    let list =
        p.w.wait_bot_text("#ops", "the list", |t| t.starts_with("*Backups of pg*"))
            .await;
    assert!(list.contains("· on-cluster + off-site"), "{list}");

    // Disaster: the data changes and the backup volume is lost.
    sql(&pg, "delete from items where id > 10");
    sql(&pg, "drop table notes");
    std::fs::remove_dir_all(p.claim_dir()).unwrap();

    p.w.sim
        .post("alice", "#ops", "/restore pg latest from offsite")
        .unwrap();
    let question = p.w.confirm("alice", "#ops").await;
    assert!(
        question.contains(&format!("`{name}`"))
            && question.contains(&format!("fetch it from s3://{BUCKET}/pg/ onto pg-backup")),
        "{question}"
    );
    let restored =
        p.w.wait_bot_text("#ops", "the restore", |t| {
            t.contains("restore pg latest from offsite")
                && (t.starts_with("✅") || t.starts_with("❌"))
        })
        .await;
    assert!(restored.starts_with("✅"), "{restored}");
    assert!(
        restored.contains("✓ fetch off-site") && restored.contains("checksum matches"),
        "{restored}"
    );
    // The data is as it was at backup time: row counts and contents.
    assert_eq!(sql(&pg, "select count(*) from items"), "100");
    assert_eq!(sql(&pg, "select count(*) from notes"), "7");
    assert_eq!(
        sql(&pg, "select name from items where id = 100"),
        "item 100"
    );
    // The safety backup taken before the restore went off-site too, after the app was back.
    assert!(restored.contains("✓ off-site copy"), "{restored}");
    assert_eq!(s3.keys(BUCKET).await.len(), 6);

    // The nightly verify can prove the off-site copy itself.
    let verified = p.run("/verify pg latest from offsite", false).await;
    assert!(verified.starts_with("✅"), "{verified}");
    assert!(
        verified.contains("✓ fetch off-site") && verified.contains("rows match its manifest"),
        "{verified}"
    );
    p.w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_offsite_copy_alerts_and_leaves_the_backup_on_the_cluster_only() {
    let test = "a_failed_offsite_copy_alerts_and_leaves_the_backup_on_the_cluster_only";
    let Some((pg, s3)) = pg_and_s3_or_skip(test) else {
        return;
    };
    // The encryption key's Secret was never created: the uploader cannot start.
    seed(&pg);
    let mut p = PgWorld::start_offsite(&pg, None, Some(&s3), false, &|_| {}).await;
    let done = p.run("/backup now pg", false).await;
    assert!(done.starts_with("✅"), "the backup itself is fine: {done}");
    assert!(done.contains("⚠ not copied off-site"), "{done}");
    let alert =
        p.w.wait_bot_text("#alerts", "the alert", |t| {
            t.contains("was not copied off-site")
        })
        .await;
    assert!(alert.contains("It is on the cluster only"), "{alert}");
    assert!(
        alert.contains("offsite-key"),
        "the alert names what is missing: {alert}"
    );
    assert!(!alert.contains(OFFSITE_PASSPHRASE) && !done.contains(OFFSITE_PASSPHRASE));
    p.w.sim.post("alice", "#ops", "/backup list pg").unwrap();
    let list =
        p.w.wait_bot_text("#ops", "the list", |t| t.starts_with("*Backups of pg*"))
            .await;
    assert!(
        list.contains("on-cluster only (off-site copy failed)"),
        "{list}"
    );
    // Nothing to fetch: refused before anyone is asked to confirm.
    p.w.sim
        .post("alice", "#ops", "/restore pg latest from offsite")
        .unwrap();
    let refused =
        p.w.wait_bot_text("#ops", "the refusal", |t| {
            t.contains("has an off-site copy")
        })
        .await;
    assert!(
        refused.contains("No backup of pg has an off-site copy yet"),
        "{refused}"
    );
    p.w.stop_bot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_dropped_backups_from_the_volume_and_the_bucket_by_the_same_plan() {
    let test = "prune_removes_dropped_backups_from_the_volume_and_the_bucket";
    let Some((pg, s3)) = pg_and_s3_or_skip(test) else {
        return;
    };
    s3.create_bucket(BUCKET).await;
    seed(&pg);
    // Keep one backup a day: of two taken today, the older is dropped.
    let mut p = PgWorld::start_offsite(&pg, None, Some(&s3), true, &|e| {
        e.backup.retention = rocketops::config::Retention {
            daily: 1,
            weekly: 0,
            monthly: 0,
        };
    })
    .await;
    let mut names = Vec::new();
    for _ in 0..2 {
        let done = p.run("/backup now pg", false).await;
        assert!(
            done.starts_with("✅") && done.contains("✓ off-site copy"),
            "{done}"
        );
        names.push(backed_up(&done, "pg"));
    }
    assert_eq!(s3.keys(BUCKET).await.len(), 6);
    let pruned = p.run("/backup prune pg", false).await;
    assert!(pruned.starts_with("✅"), "{pruned}");
    assert!(
        pruned.contains("✓ prune off-site")
            && pruned.contains(&format!("removed the off-site copies of `{}`", names[0])),
        "{pruned}"
    );
    let mut keys = s3.keys(BUCKET).await;
    keys.sort();
    assert!(
        keys.iter()
            .all(|k| k.starts_with(&format!("pg/{}.", names[1]))),
        "{keys:?} {names:?} {pruned}"
    );
    assert_eq!(keys.len(), 3);
    let left: Vec<String> = std::fs::read_dir(p.claim_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|f| f.starts_with(&names[1])), "{left:?}");
    p.w.stop_bot().await;
}

/// Recording stand-ins for the MongoDB tools, put first on the local runtime's `PATH`. No real
/// `mongod` can run here, so these keep a database as a JSON file per server (`<host_port>.json`
/// under `dir`), check the flags the templates pass, and log every call to `dir/calls.log`.
/// `mongosh` runs the templates' own `--eval` JavaScript under node, with `db`, `print` and
/// `require` as mongosh provides them, so the manifest and verify logic is really executed.
struct MongoStandIns {
    dir: tempfile::TempDir,
}

impl MongoStandIns {
    fn write() -> Result<MongoStandIns, String> {
        which("node").ok_or(
            "node is not installed (the mongosh stand-in runs the templates' JavaScript with it)",
        )?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        // Containers of a root simulator run as nobody, who writes the databases and the log.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let d = dir.path().display().to_string();
        let state_name = r#"state_name() { local h=${1#mongodb://}; h=${h#mongodb+srv://}; h=${h#*@}; h=${h%%/*}; h=${h%%\?*}; echo "${h//[^A-Za-z0-9.-]/_}"; }"#;
        let scripts = [
            (
                "mongosh",
                format!(
                    r#"#!/usr/bin/env node
const fs = require("fs");
const DIR = "{d}";
const args = process.argv.slice(2);
fs.appendFileSync(DIR + "/calls.log", "mongosh " + JSON.stringify(args) + "\n");
const uri = args.find(a => /^mongodb(\+srv)?:\/\//.test(a));
const at = args.indexOf("--eval");
if (!uri || at < 0 || !args.includes("--quiet")) {{
  console.error("stand-in mongosh: unexpected arguments " + JSON.stringify(args));
  process.exit(2);
}}
const host = uri.replace(/^mongodb(\+srv)?:\/\//, "").replace(/^[^@]*@/, "").split(/[/?]/)[0].replace(/[^A-Za-z0-9.-]/g, "_");
const file = DIR + "/" + host + ".json";
const state = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : {{}};
const db = {{
  getMongo: () => ({{ getDBNames: () => Object.keys(state) }}),
  getSiblingDB: d => ({{
    getCollectionNames: () => Object.keys(state[d] || {{}}),
    getCollection: c => ({{ countDocuments: () => (state[d] || {{}})[c] || 0 }}),
  }}),
}};
const print = (...a) => console.log(...a);
new Function("db", "print", "require", "process", args[at + 1])(db, print, require, process);
"#
                ),
            ),
            (
                "mongodump",
                format!(
                    r#"#!/bin/bash
set -euo pipefail
echo "mongodump $*" >> {d}/calls.log
{state_name}
uri=""; archive=""; zipped=0; oplog=0
for a in "$@"; do
  case "$a" in
    --uri=*) uri="${{a#--uri=}}" ;;
    --archive=*) archive="${{a#--archive=}}" ;;
    --gzip) zipped=1 ;;
    --oplog) oplog=1 ;;
    *) echo "stand-in mongodump: unknown argument $a" >&2; exit 2 ;;
  esac
done
if [ -z "$uri" ] || [ -z "$archive" ] || [ "$zipped" != 1 ] || [ "$oplog" != 1 ]; then
  echo "stand-in mongodump: needs --uri, --oplog, --gzip and --archive" >&2; exit 2
fi
gzip -c "{d}/$(state_name "$uri").json" > "$archive"
"#
                ),
            ),
            (
                "mongorestore",
                format!(
                    r#"#!/bin/bash
set -euo pipefail
echo "mongorestore $*" >> {d}/calls.log
{state_name}
uri=""; archive=""; zipped=0
for a in "$@"; do
  case "$a" in
    --uri=*) uri="${{a#--uri=}}" ;;
    --archive=*) archive="${{a#--archive=}}" ;;
    --gzip) zipped=1 ;;
    --drop|--oplogReplay) ;;
    *) echo "stand-in mongorestore: unknown argument $a" >&2; exit 2 ;;
  esac
done
if [ -z "$uri" ] || [ -z "$archive" ] || [ "$zipped" != 1 ]; then
  echo "stand-in mongorestore: needs --uri, --gzip and --archive" >&2; exit 2
fi
gunzip -c "$archive" > "{d}/$(state_name "$uri").json"
"#
                ),
            ),
            (
                "mongod",
                format!(
                    r#"#!/bin/bash
set -euo pipefail
echo "mongod $*" >> {d}/calls.log
case " $* " in *" --fork "*) ;; *) echo "stand-in mongod: only --fork is supported" >&2; exit 2 ;; esac
case " $* " in *" --dbpath "*) ;; *) echo "stand-in mongod: needs --dbpath" >&2; exit 2 ;; esac
"#
                ),
            ),
        ];
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
        for (name, text) in scripts {
            let p = bin.join(name);
            std::fs::write(&p, text).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        Ok(MongoStandIns { dir })
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The database the server at `host` (as `host_port`) holds.
    fn database(&self, host: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{host}.json")))
            .unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap()
    }

    fn set_database(&self, host: &str, db: serde_json::Value) {
        let p = self.dir.path().join(format!("{host}.json"));
        std::fs::write(&p, db.to_string()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mongodb_templates_run_against_recording_stand_ins_for_the_mongodb_tools() {
    let tools = match MongoStandIns::write() {
        Ok(t) => t,
        Err(why) if std::env::var_os("ROCKETOPS_REQUIRE_REAL").is_some() => panic!("{why}"),
        Err(why) => {
            eprintln!("\n!!!!! SKIPPED the MongoDB template test: {why}\n");
            return;
        }
    };
    const SOURCE: &str = "mongodb-0.mongodb-headless_27017";
    tools.set_database(
        SOURCE,
        json!({"rocketchat": {"users": 3, "rocketchat_message": 120}, "admin": {"system.users": 1}}),
    );
    let jobs = tempfile::tempdir().unwrap();
    let local = LocalJobs {
        images: vec!["mongo:*".into()],
        root: jobs.path().to_path_buf(),
        path: vec![tools.bin()],
    };
    let mut w = World::with_cluster_running(Some(local.clone()), &["test", "prod"]).await;
    let uri = "mongodb://rocketchat:s3cret@mongodb-0.mongodb-headless:27017/rocketchat?replicaSet=rs0&authSource=admin";
    w.kube()
        .create(
            "secrets",
            "test",
            json!({"metadata": {"name": "mongodb"}, "data": {"uri": base64::engine::general_purpose::STANDARD.encode(uri)}}),
        )
        .unwrap();
    w.kube()
        .create(
            "persistentvolumeclaims",
            "test",
            json!({"metadata": {"name": "mongodb-backup"}, "spec": {"accessModes": ["ReadWriteOnce"]}}),
        )
        .unwrap();
    let mut c = w.config();
    let e = c.environments.get_mut("test").unwrap();
    e.backup_cronjob = "mongodb-backup-template".into();
    e.backup.claim = Some("mongodb-backup".into());
    w.start_bot_with(c).await;
    let p = PgWorld {
        w,
        _jobs: jobs,
        local,
    };

    let done = p.run("/backup now test", false).await;
    assert!(done.starts_with("✅"), "{done}");
    let name = backed_up(&done, "test");
    let dir = p.local.claim_dir("test", "mongodb-backup");
    // The manifest is what the template's JavaScript printed, for the user databases only.
    let manifest = std::fs::read_to_string(dir.join(format!("{name}.manifest.txt"))).unwrap();
    assert_eq!(
        manifest,
        "rocketchat.rocketchat_message 120\nrocketchat.users 3\n"
    );
    let sums = std::fs::read_to_string(dir.join(format!("{name}.archive.gz.sha256"))).unwrap();
    assert!(sums.ends_with(&format!("  {name}.archive.gz\n")), "{sums}");
    let calls = tools.calls();
    assert!(
        calls.contains(&format!("mongodump --uri={uri} --oplog --gzip --archive=")),
        "the URI reaches mongodump whole, quotes and all: {calls}"
    );

    let verified = p.run("/verify test", false).await;
    assert!(
        verified.starts_with("✅")
            && verified.contains("2 collections, 123 documents match its manifest"),
        "{verified}"
    );
    assert!(
        tools.calls().contains("mongod --dbpath"),
        "{}",
        tools.calls()
    );

    // The data changes; the restore puts the backup's back.
    tools.set_database(SOURCE, json!({"rocketchat": {"users": 1}}));
    let restored = p.run("/restore test latest", true).await;
    assert!(restored.starts_with("✅"), "{restored}");
    assert_eq!(
        tools.database(SOURCE)["rocketchat"],
        json!({"users": 3, "rocketchat_message": 120}),
        "{restored}\n{}",
        tools.calls()
    );
    assert!(
        tools.calls().contains(&format!(
            "mongorestore --uri={uri} --drop --oplogReplay --gzip --archive={name}.archive.gz"
        )),
        "{}",
        tools.calls()
    );
    let mut w = p.w;
    w.stop_bot().await;
}

#[test]
fn the_sandbox_with_real_postgres_backs_up_verifies_and_restores_a_real_database() {
    if rocketops::sandbox::postgres::server_bin().is_none() {
        if std::env::var_os("ROCKETOPS_REQUIRE_REAL").is_some() {
            panic!("`rocketops sandbox --real-postgres` needs a PostgreSQL server");
        }
        eprintln!(
            "\n!!!!! SKIPPED the --real-postgres sandbox test: no PostgreSQL server installed\n"
        );
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/real-postgres.script");
    let out = Command::new(env!("CARGO_BIN_EXE_rocketops"))
        .args(["sandbox", "--real-postgres", "--script", script])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pg: a real PostgreSQL at postgresql://postgres@127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("every expectation met"), "{stdout}");
    // The server and its folder are gone with the sandbox.
    let folder = stdout
        .split("the archives in ")
        .nth(1)
        .and_then(|s| s.split("/jobs/").next())
        .unwrap();
    assert!(!Path::new(folder).exists(), "{folder} is left behind");
}
