//! Job templates really run: the PostgreSQL backup, verify and restore templates against a local PostgreSQL server, through the Kubernetes simulator's local Job runtime.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use rocketops::sandbox::kube::runtime::LocalJobs;
use serde_json::json;

use crate::support::World;

/// A PostgreSQL server of the machine's own, started on a free loopback port in a temporary
/// folder, as an ordinary user; stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub port: u16,
    /// The user the server runs as when the tests run as root.
    owner: Option<(u32, u32)>,
}

/// The newest PostgreSQL server binaries on the machine (Debian keeps them off `PATH`).
fn server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROCKETOPS_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// The `postgres` user's ids, for a server started by root (PostgreSQL refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam is given a NUL-terminated name and its
    // result is read at once, before any other call could reuse its buffer.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            Some((65_534, 65_534))
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    pub fn start() -> Result<Postgres, String> {
        let bin = server_bin().ok_or("no PostgreSQL server under /usr/lib/postgresql")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let owner = postgres_user();
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(u), Some(g)).map_err(|e| e.to_string())?;
        }
        let pg = Postgres {
            dir,
            bin,
            port: free_port(),
            owner,
        };
        let data = pg.data();
        let data = data.to_string_lossy();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {data} -c fsync=off",
            pg.port
        );
        let log = pg.dir.path().join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-w",
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "start",
            ],
        )?;
        pg.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "app",
            ],
        )?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).current_dir(self.dir.path());
        if let Some((u, g)) = self.owner {
            cmd.uid(u).gid(g);
        }
        let out = cmd.output().map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The connection string a Job is given.
    pub fn uri(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/app", self.port)
    }

    /// One statement's result, unaligned (`psql -At`).
    pub fn sql(&self, sql: &str) -> String {
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "app",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
        );
    }
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
        let jobs = tempfile::tempdir().unwrap();
        let local = LocalJobs {
            images: vec!["postgres:*".into()],
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

    /// Sends `text` as alice in #ops and waits for the operation's final answer.
    pub async fn run(&self, text: &str, confirm: bool) -> String {
        self.w.sim.post("alice", "#ops", text).unwrap();
        if confirm {
            self.w.confirm("alice", "#ops").await;
        }
        let echo = text.trim_start_matches('/').to_string();
        self.w
            .wait_bot_text("#ops", text, |t| {
                t.contains(&echo) && (t.starts_with("✅") || t.starts_with("❌"))
            })
            .await
    }
}

fn seed(pg: &Postgres) {
    pg.sql("create table items (id serial primary key, name text not null)");
    pg.sql("insert into items (name) select 'item ' || g from generate_series(1, 100) g");
    pg.sql("create table notes (id int primary key, body text)");
    pg.sql("insert into notes select g, 'note \"' || g || E'\\' with quotes' from generate_series(1, 7) g");
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
    let name = done
        .split("pg is backed up: `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("no backup name in {done}"))
        .to_string();
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
    pg.sql("delete from items where id > 60");
    pg.sql("update notes set body = 'changed'");
    pg.sql("create table later (id int)");

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
    assert_eq!(pg.sql("select count(*) from items"), "100");
    assert_eq!(
        pg.sql("select body from notes where id = 3"),
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
