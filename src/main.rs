//! The `rocketops` command line: parses arguments and hands each subcommand to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rocketops::config::{Config, LogFormat, StoreBackend};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "rocketops",
    version,
    about = "ChatOps for Rocket.Chat on Kubernetes"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "ROCKETOPS_CONFIG",
        default_value = "rocketops.toml"
    )]
    config: PathBuf,
    /// Log format (overrides `telemetry.log_format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot against the configured Rocket.Chat server.
    Run,
    /// Run the bot against the built-in simulators, with a chat prompt.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Address for the Rocket.Chat simulator (default: a free loopback port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve the simulators only, without the bot.
        #[arg(long)]
        no_bot: bool,
        /// Run a scripted conversation instead of the prompt; exit non-zero if an expectation fails.
        #[arg(long, value_name = "FILE")]
        script: Option<PathBuf>,
        /// Show the bot's and the simulators' logs on standard error (otherwise the prompt keeps
        /// them in a file, named at start).
        #[arg(long)]
        verbose: bool,
        /// Add a `pg` environment backed by a real local PostgreSQL server (Debian's
        /// `postgresql`): its backups, verifies and restores run for real.
        #[arg(long)]
        real_postgres: bool,
        /// The Rocket.Chat release the simulator plays: 7.10, 8.5, 8.9 or 9.0 (the newest).
        #[arg(long, value_name = "VERSION", default_value_t = rocketops::sandbox::rocketchat::Release::NEWEST)]
        rocketchat_version: rocketops::sandbox::rocketchat::Release,
    },
    /// Write a commented starter configuration for a real deployment, to `--config`'s path.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the configuration file and print a summary.
    CheckConfig {
        /// Also log in to Rocket.Chat as the bot and check what a deployment needs there: the
        /// server's version, the rooms, the bot's roles, its rate-limit exemption and the
        /// slash-command setting.
        #[arg(long)]
        online: bool,
        /// Check a file where the secrets (ROCKETOPS_RC_TOKEN, ROCKETOPS_AUDIT_KEY, ...) are not
        /// present: their absence is reported, not failed on.
        #[arg(long, conflicts_with = "online")]
        offline_secrets: bool,
    },
    /// Show the audit log (newest last), or check its hash chain with `audit verify`.
    Audit(rocketops::audit::AuditArgs),
    /// The backup catalog without chat: `backups` (list), `backups plan` (what a prune would
    /// delete), `backups report`.
    Backups(rocketops::backups::BackupsArgs),
    /// Measure message-to-answer latency and throughput against the simulator.
    #[cfg(feature = "sandbox")]
    Bench(rocketops::bench::BenchArgs),
}

fn main() -> ExitCode {
    rocketops::memory::limit_arenas();
    rocketops::tls::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    let load = || Config::load(&cli.config);
    match cli.command {
        Cmd::Run => {
            let config = match load() {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            rocketops::telemetry::init(cli.log_format.unwrap_or(config.telemetry.log_format));
            let result = match config.ha.store {
                StoreBackend::Sled => {
                    rocketops::app::run(config, shutdown_on_signal(), Default::default()).await
                }
                StoreBackend::Kubernetes => {
                    rocketops::ha::run::run(config, shutdown_on_signal(), Default::default()).await
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Cmd::Init { force } => {
            let path = cli.config.clone();
            if path.exists() && !force {
                return fail(format!(
                    "{} exists; use --force to overwrite it",
                    path.display()
                ));
            }
            match std::fs::write(&path, rocketops::config::STARTER) {
                Ok(()) => {
                    println!(
                        "wrote {}: edit it, put the token in ROCKETOPS_RC_TOKEN, then `rocketops check-config --config {}`",
                        path.display(),
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("cannot write {}: {e}", path.display())),
            }
        }
        #[cfg(feature = "sandbox")]
        Cmd::Sandbox {
            listen,
            no_bot,
            script,
            verbose,
            real_postgres,
            rocketchat_version,
        } => {
            use std::io::IsTerminal;
            let format = cli.log_format.unwrap_or_default();
            if script.is_some() && std::env::var_os("RUST_LOG").is_none() {
                // Keep a scripted run's output to the conversation.
                rocketops::telemetry::init_with_filter(format, "warn");
            } else if !verbose && script.is_none() && std::io::stdin().is_terminal() {
                // The terminal is for the chat; the logs go to a file.
                let path = std::env::temp_dir()
                    .join(format!("rocketops-sandbox-{}.log", std::process::id()));
                match rocketops::telemetry::init_to_file(format, "info", &path) {
                    Ok(()) => println!("logs: {} (`--verbose` shows them here)", path.display()),
                    Err(e) => {
                        rocketops::telemetry::init(format);
                        tracing::warn!(error = %e, "cannot write the log file; logging here");
                    }
                }
            } else {
                rocketops::telemetry::init(format);
            }
            let opts = rocketops::sandbox::SandboxOptions {
                listen,
                no_bot,
                script,
                real_postgres,
                release: rocketchat_version,
            };
            let code = match rocketops::sandbox::run(opts, shutdown_on_signal()).await {
                Ok(()) => 0,
                Err(e) => {
                    fail(e);
                    1
                }
            };
            // Leave now: a reader of standard input must not hold the exit until Enter is pressed.
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(code)
        }
        Cmd::CheckConfig {
            online,
            offline_secrets,
        } => match if offline_secrets {
            Config::load_without_secrets(&cli.config)
        } else {
            load()
        } {
            Ok(c) => match rocketops::app::load_runbooks(&c) {
                Ok(runbooks) => {
                    let (refusals, notes) = c.run_refusals(offline_secrets);
                    if !refusals.is_empty() {
                        println!("{}", c.summary());
                        return fail(format!(
                            "{}: `rocketops run` would refuse to start:\n  {}",
                            cli.config.display(),
                            refusals.join("\n  ")
                        ));
                    }
                    println!("{}: OK\n{}", cli.config.display(), c.summary());
                    for n in &notes {
                        println!("secrets:      {n}");
                    }
                    let names: Vec<&str> = runbooks.iter().map(|r| r.name.as_str()).collect();
                    println!(
                        "runbooks:     {}",
                        if names.is_empty() {
                            "(none)".to_string()
                        } else {
                            names.join(", ")
                        }
                    );
                    if !online {
                        return ExitCode::SUCCESS;
                    }
                    if std::env::var_os("RUST_LOG").is_none() {
                        rocketops::telemetry::init_with_filter(
                            cli.log_format.unwrap_or_default(),
                            "error",
                        );
                    }
                    println!("rocketchat (online):");
                    let report = rocketops::chat::rocketchat::preflight::check(&c.rocketchat).await;
                    print!("{report}");
                    let mut failed = report.failed();
                    if c.ha.store == StoreBackend::Kubernetes {
                        println!("kubernetes state (online):");
                        let ha = rocketops::ha::preflight::check(&c.ha).await;
                        print!("{ha}");
                        failed |= ha.failed();
                    }
                    if failed {
                        fail("not ready for `rocketops run` (FAIL above)")
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Cmd::Audit(args) => {
            let config = match load() {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let store = match rocketops::ha::open_for_reading(&config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match rocketops::audit::run(&store, &config, &args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => fail(e),
            }
        }
        Cmd::Backups(args) => {
            let config = match load() {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let store = match rocketops::ha::open_for_reading(&config).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match rocketops::backups::run(&store, &config, &args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        #[cfg(feature = "sandbox")]
        Cmd::Bench(args) if args.ha.ha => {
            rocketops::telemetry::init(cli.log_format.unwrap_or_default());
            match rocketops::bench::ha::run(&args.ha).await {
                Ok(report) => {
                    if args.json {
                        println!("{}", report.json());
                    } else {
                        println!("{report}");
                    }
                    if report.clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(e),
            }
        }
        #[cfg(feature = "sandbox")]
        Cmd::Bench(args) if args.chaos.chaos => {
            rocketops::telemetry::init(cli.log_format.unwrap_or_default());
            match rocketops::bench::chaos::run(&args.chaos).await {
                Ok(report) => {
                    println!("{report}");
                    if report.clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(e),
            }
        }
        #[cfg(feature = "sandbox")]
        Cmd::Bench(args) => {
            rocketops::telemetry::init(cli.log_format.unwrap_or_default());
            let json = args.json;
            match rocketops::bench::run(args).await {
                Ok(report) if json => {
                    println!("{}", report.json());
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}
