//! A real PostgreSQL server of the machine's own for the sandbox's `pg` environment and the tests: started on a free loopback port in a folder of its own, as an ordinary user, and stopped (its folder removed) when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server; `app` is its database.
pub struct Postgres {
    dir: PathBuf,
    /// The server's binaries (`initdb`, `pg_ctl`, `pg_dump` …), for Jobs that need them.
    pub bin: PathBuf,
    pub port: u16,
    /// The user the server runs as when started by root (PostgreSQL refuses to run as root).
    owner: Option<(u32, u32)>,
}

/// Why no server could be had.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "no PostgreSQL server under /usr/lib/postgresql (install Debian's `postgresql`, or set ROCKETOPS_PG_BIN)"
    )]
    NotInstalled,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{program} failed: {output}")]
    Failed { program: String, output: String },
}

/// The newest PostgreSQL server binaries on the machine (Debian keeps them off `PATH`).
pub fn server_bin() -> Option<PathBuf> {
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

/// The `postgres` user's ids (else nobody's) when running as root; `None` otherwise.
fn server_user() -> Option<(u32, u32)> {
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

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Postgres {
    /// Starts a server with an empty database `app`.
    pub fn start() -> Result<Postgres, PostgresError> {
        let bin = server_bin().ok_or(PostgresError::NotInstalled)?;
        let dir = std::env::temp_dir().join(format!(
            "rocketops-pg-{}-{:x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let owner = server_user();
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(&dir, Some(u), Some(g))?;
        }
        let pg = Postgres {
            dir,
            bin,
            port: free_port()?,
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
        let log = pg.dir.join("server.log");
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
        self.dir.join("data")
    }

    /// The folder the server lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String, PostgresError> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).current_dir(&self.dir);
        if let Some((u, g)) = self.owner {
            cmd.uid(u).gid(g);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(PostgresError::Failed {
                program: program.into(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The connection string a Job is given.
    pub fn uri(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/app", self.port)
    }

    /// Sample data: `items` (100 rows) and `notes` (7 rows whose text has quotes in it).
    pub fn seed_sample(&self) -> Result<(), PostgresError> {
        for statement in [
            "create table items (id serial primary key, name text not null)",
            "insert into items (name) select 'item ' || g from generate_series(1, 100) g",
            "create table notes (id int primary key, body text)",
            "insert into notes select g, 'note \"' || g || E'\\' with quotes' from generate_series(1, 7) g",
        ] {
            self.sql(statement)?;
        }
        Ok(())
    }

    /// One statement's result, unaligned (`psql -At`).
    pub fn sql(&self, sql: &str) -> Result<String, PostgresError> {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
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
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
