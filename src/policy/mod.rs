//! Who may run what where (users, Rocket.Chat roles, rooms), confirmation codes, two-person approvals and per-user rate limits.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::command::runbook::RunbookSpec;
use crate::command::{Asks, Command};
use crate::config::EnvironmentConfig;
pub use crate::config::policy::{AllowRule, EnvPolicy, MAX_APPROVALS, PolicyConfig, Who};
pub use poison::lock;

pub mod poison;

/// Who is asking, from where.
#[derive(Debug, Clone)]
pub struct Requester<'a> {
    pub username: &'a str,
    /// Rocket.Chat roles (empty when not looked up).
    pub roles: &'a [String],
    /// Channel name (`None` for a DM).
    pub room: Option<&'a str>,
}

/// What the policy says about a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// Ask `confirm CODE` first.
        confirm: bool,
        /// How many other users must approve, each a different one.
        approvals: u32,
    },
    Deny {
        reason: String,
    },
}

/// The policy over all environments.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The configuration, shared: the environments' rules are read from it, not copied.
    config: std::sync::Arc<crate::config::Config>,
    pub runbooks: Vec<RunbookSpec>,
}

impl Policy {
    pub fn new(
        config: std::sync::Arc<crate::config::Config>,
        runbooks: Vec<RunbookSpec>,
    ) -> Policy {
        Policy { config, runbooks }
    }

    /// The configured environments, by name.
    pub fn envs(&self) -> &BTreeMap<String, EnvironmentConfig> {
        &self.config.environments
    }

    /// Whether deciding about `cmd` needs the asker's Rocket.Chat roles.
    pub fn needs_roles(&self, cmd: &Command) -> bool {
        let envs: Vec<&str> = match cmd.env() {
            Some(e) => vec![e],
            None => self.envs().keys().map(String::as_str).collect(),
        };
        let runbook_roles = self
            .runbooks
            .iter()
            .any(|r| r.name == cmd.name() && !r.roles.is_empty());
        runbook_roles
            || matches!(cmd, Command::Query { query, .. } if query.needs_roles)
            || envs.iter().filter_map(|e| self.envs().get(*e)).any(|e| {
                e.policy.allow.iter().any(|r| !r.roles.is_empty())
                    || e.policy.readers.as_ref().is_some_and(Who::needs_roles)
                    || e.policy.skip_backup.needs_roles()
            })
    }

    /// Decides whether `who` may run `cmd` (commands without an environment act on all of them).
    pub fn authorize(&self, cmd: &Command, who: &Requester<'_>) -> Decision {
        if cmd.is_open() {
            return Decision::Allow {
                confirm: false,
                approvals: 0,
            };
        }
        // Reading without naming an environment shows what the asker may see, not all or nothing.
        if !cmd.is_mutating() && cmd.env().is_none() && !self.envs().is_empty() {
            let visible = self.visible_envs(cmd, who);
            if visible.is_empty() {
                let first = self
                    .envs()
                    .keys()
                    .next()
                    .map(String::as_str)
                    .unwrap_or_default();
                return self.authorize_in(cmd.policy_name(), cmd, first, who);
            }
            return Decision::Allow {
                confirm: false,
                approvals: 0,
            };
        }
        let envs: Vec<&str> = match cmd.env() {
            Some(e) => vec![e],
            None => self.envs().keys().map(String::as_str).collect(),
        };
        let mut confirm = cmd.asks() == Asks::AlwaysConfirm;
        let mut approvals = 0;
        for env in envs {
            match self.authorize_in(cmd.policy_name(), cmd, env, who) {
                Decision::Allow {
                    confirm: c,
                    approvals: a,
                } => {
                    confirm |= c;
                    approvals = approvals.max(a);
                }
                deny => return deny,
            }
        }
        // Copying another environment's data needs the right to see that environment's backups.
        if let Command::Restore {
            env,
            from: Some(src),
            ..
        } = cmd
            && src != env
        {
            let read = Command::BackupList {
                env: Some(src.clone()),
            };
            if let Decision::Deny { reason } = self.authorize_in("backup list", &read, src, who) {
                return Decision::Deny {
                    reason: format!("restoring from {src} needs access to its backups: {reason}"),
                };
            }
        }
        Decision::Allow { confirm, approvals }
    }

    /// The decision for one command name in one environment.
    pub fn authorize_in(
        &self,
        name: &str,
        cmd: &Command,
        env: &str,
        who: &Requester<'_>,
    ) -> Decision {
        let Some(e) = self.envs().get(env) else {
            return Decision::Deny {
                reason: format!("{env} is not a configured environment."),
            };
        };
        let p = &e.policy;
        if !p.rooms.is_empty() {
            let ok = who.room.is_some_and(|r| {
                p.rooms
                    .iter()
                    .any(|allowed| allowed.trim_start_matches('#') == r)
            });
            if !ok {
                let rooms = p
                    .rooms
                    .iter()
                    .map(|r| format!("#{}", r.trim_start_matches('#')))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Decision::Deny {
                    reason: format!("commands for {env} are accepted only in {rooms}."),
                };
            }
        }
        if !cmd.is_mutating() {
            return match &p.readers {
                Some(r) if !r.includes(who.username, who.roles) => Decision::Deny {
                    reason: format!("in {env}, `{name}` is for {}.", r.describe()),
                },
                _ => Decision::Allow {
                    confirm: false,
                    approvals: 0,
                },
            };
        }
        let runbook = self.runbooks.iter().find(|r| r.name == name);
        // The environment's allow rules decide first (default deny); a runbook's own rules only narrow.
        let rules: Vec<&AllowRule> = p.allow.iter().filter(|r| r.covers(name)).collect();
        let mut allowed = if rules.is_empty() {
            Err(format!(
                "no one may run `{name}` in {env}: its policy does not allow it (default deny)."
            ))
        } else if rules
            .iter()
            .any(|r| r.who().includes(who.username, who.roles))
        {
            Ok(())
        } else {
            let who_may = rules
                .iter()
                .map(|r| r.who().describe())
                .collect::<Vec<_>>()
                .join("; ");
            Err(format!("in {env}, `{name}` is for {who_may}."))
        };
        if let (Ok(()), Some(r)) = (&allowed, runbook) {
            if !r.environments.is_empty() && !r.environments.iter().any(|e| e == env) {
                allowed = Err(format!(
                    "`{name}` runs only in {}.",
                    r.environments.join(", ")
                ));
            } else if !r.roles.is_empty() || !r.users.is_empty() {
                let w = Who {
                    users: r.users.clone(),
                    roles: r.roles.clone(),
                };
                if !w.includes(who.username, who.roles) {
                    allowed = Err(format!("`{name}` is for {}.", w.describe()));
                }
            }
        }
        if let Err(reason) = allowed {
            return Decision::Deny { reason };
        }
        let skipping = matches!(
            cmd,
            Command::Deploy {
                no_backup: true,
                ..
            } | Command::Restore {
                no_safety_backup: true,
                ..
            }
        );
        if skipping && !p.skip_backup.includes(who.username, who.roles) {
            return Decision::Deny {
                reason: format!(
                    "skipping the backup in {env} is for {}.",
                    p.skip_backup.describe()
                ),
            };
        }
        // What touches no live data (a verify restores into a scratch database of its own) is
        // authorized, audited and locked like any change, and asks no one twice.
        if cmd.asks() == Asks::Nobody {
            return Decision::Allow {
                confirm: false,
                approvals: 0,
            };
        }
        let confirm =
            p.confirm.unwrap_or_else(|| e.is_production(env)) || runbook.is_some_and(|r| r.confirm);
        Decision::Allow {
            confirm,
            approvals: p.approvals,
        }
    }

    /// The environments where `who` may run the read-only `cmd` (for commands that name none).
    pub fn visible_envs(&self, cmd: &Command, who: &Requester<'_>) -> Vec<String> {
        self.envs()
            .keys()
            .filter(|e| {
                matches!(
                    self.authorize_in(cmd.policy_name(), cmd, e, who),
                    Decision::Allow { .. }
                )
            })
            .cloned()
            .collect()
    }

    /// Whether `name` may run while `env` is locked.
    pub fn allowed_when_locked(&self, env: &str, name: &str) -> bool {
        self.envs()
            .get(env)
            .is_some_and(|e| e.policy.allow_when_locked.iter().any(|c| c == name))
    }

    /// The environments where `who` may run `name` (`Some(vec![])` for commands without one).
    pub fn where_allowed(
        &self,
        name: &str,
        sample: &Command,
        who: &Requester<'_>,
    ) -> Option<Vec<String>> {
        if sample.is_open() {
            return Some(Vec::new());
        }
        let envs: Vec<String> = self
            .envs()
            .keys()
            .filter(|e| {
                matches!(
                    self.authorize_in(name, sample, e, who),
                    Decision::Allow { .. }
                )
            })
            .cloned()
            .collect();
        (!envs.is_empty()).then_some(envs)
    }
}

/// A per-user token bucket.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    burst: u32,
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `user`, or says how many seconds until one is free.
    pub fn check(&mut self, user: &str) -> Result<(), u64> {
        let now = Instant::now();
        let rate = self.per_minute as f64 / 60.0;
        let (tokens, at) = self
            .buckets
            .entry(user.to_string())
            .or_insert((self.burst as f64, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(self.burst as f64);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// A command waiting for its requester's `confirm CODE`.
#[derive(Debug, Clone)]
pub struct PendingConfirm<T> {
    pub user: String,
    pub payload: T,
    pub expires: Instant,
}

/// A command waiting for `needed` approvals, each from a different user other than its requester.
#[derive(Debug, Clone)]
pub struct PendingApproval<T> {
    /// Its requester.
    pub user: String,
    pub payload: T,
    pub expires: Instant,
    /// How many distinct approvers it needs.
    pub needed: u32,
    /// Who approved so far, in order.
    pub approvers: Vec<String>,
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval<T> {
    /// Counted; `missing` more distinct approvers are needed. The command still waits.
    Counted {
        requester: String,
        approvers: Vec<String>,
        missing: u32,
    },
    /// The last approval needed: the command is handed over to run.
    Complete {
        requester: String,
        approvers: Vec<String>,
        payload: T,
    },
}

/// Why a confirmation or approval did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    #[error("No command is waiting for the code `{0}`; it may have been used already.")]
    UnknownCode(String),
    #[error("That confirmation expired; send the command again.")]
    Expired,
    #[error("Only @{0} can confirm that command.")]
    WrongUser(String),
    #[error("No operation #{0} is waiting for approval.")]
    UnknownOp(u64),
    #[error("You can't approve your own request; another authorized user must.")]
    SelfApproval,
    #[error(
        "You already approved #{op}; it still needs {} from someone else.",
        approvals(*missing)
    )]
    AlreadyApproved { op: u64, missing: u32 },
}

/// `1 approval`, `2 approvals`.
pub fn approvals(n: u32) -> String {
    format!("{n} approval{}", if n == 1 { "" } else { "s" })
}

/// Something filed under an operation number.
pub trait HasOp {
    fn op(&self) -> u64;
}

const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Confirmation codes and approval requests, with expiry.
#[derive(Debug)]
pub struct Pending<T> {
    confirms: HashMap<String, PendingConfirm<T>>,
    approvals: BTreeMap<u64, PendingApproval<T>>,
}

impl<T: Clone> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            confirms: HashMap::new(),
            approvals: BTreeMap::new(),
        }
    }
}

impl<T: Clone> Pending<T> {
    /// Files a command for confirmation; returns its code.
    pub fn ask_confirm(&mut self, user: &str, payload: T, ttl: Duration) -> String {
        self.sweep();
        let code: String = loop {
            let c = crate::random::token(CODE_ALPHABET, 6);
            if !self.confirms.contains_key(&c) {
                break c;
            }
        };
        self.confirms.insert(
            code.clone(),
            PendingConfirm {
                user: user.to_string(),
                payload,
                expires: Instant::now() + ttl,
            },
        );
        code
    }

    /// Takes the command `code` stands for, if `user` asked for it and it has not expired.
    pub fn confirm(&mut self, code: &str, user: &str) -> Result<T, PendingError> {
        let code = code.to_uppercase();
        let p = self
            .confirms
            .get(&code)
            .ok_or_else(|| PendingError::UnknownCode(code.clone()))?;
        if Instant::now() >= p.expires {
            self.confirms.remove(&code);
            return Err(PendingError::Expired);
        }
        if !p.user.eq_ignore_ascii_case(user) {
            return Err(PendingError::WrongUser(p.user.clone()));
        }
        self.confirms
            .remove(&code)
            .map(|p| p.payload)
            .ok_or(PendingError::UnknownCode(code))
    }

    /// Files an operation for approval by `needed` (at least one) users other than `user`.
    pub fn ask_approval(&mut self, op: u64, user: &str, payload: T, needed: u32, ttl: Duration) {
        self.sweep();
        self.approvals.insert(
            op,
            PendingApproval {
                user: user.to_string(),
                payload,
                expires: Instant::now() + ttl,
                needed: needed.max(1),
                approvers: Vec::new(),
            },
        );
    }

    /// Looks at a pending approval without taking it (to check the approver's rights).
    pub fn peek_approval(&self, op: u64) -> Option<&PendingApproval<T>> {
        self.approvals
            .get(&op)
            .filter(|p| Instant::now() < p.expires)
    }

    /// Counts `approver`'s approval of `op`: not its requester, and once per person. Hands the
    /// command over when it is the last one needed.
    pub fn approve(&mut self, op: u64, approver: &str) -> Result<Approval<T>, PendingError> {
        let p = self.peek_approval(op).ok_or(PendingError::UnknownOp(op))?;
        if p.user.eq_ignore_ascii_case(approver) {
            return Err(PendingError::SelfApproval);
        }
        if p.approvers.iter().any(|a| a.eq_ignore_ascii_case(approver)) {
            return Err(PendingError::AlreadyApproved {
                op,
                missing: p.needed.saturating_sub(p.approvers.len() as u32),
            });
        }
        let p = self
            .approvals
            .get_mut(&op)
            .ok_or(PendingError::UnknownOp(op))?;
        p.approvers.push(approver.to_string());
        let missing = p.needed.saturating_sub(p.approvers.len() as u32);
        if missing > 0 {
            return Ok(Approval::Counted {
                requester: p.user.clone(),
                approvers: p.approvers.clone(),
                missing,
            });
        }
        let p = self
            .approvals
            .remove(&op)
            .ok_or(PendingError::UnknownOp(op))?;
        Ok(Approval::Complete {
            requester: p.user,
            approvers: p.approvers,
            payload: p.payload,
        })
    }

    /// Drops the approval request `op` (what it asked for no longer holds); returns it.
    pub fn drop_approval(&mut self, op: u64) -> Option<T> {
        self.approvals.remove(&op).map(|p| p.payload)
    }

    /// Withdraws whatever waits under operation `op` (confirmation or approval) for `user`, its
    /// requester: `Some(Err(owner))` when it belongs to someone else, `None` when nothing waits.
    pub fn withdraw_op(&mut self, op: u64, user: &str) -> Option<Result<T, String>>
    where
        T: HasOp,
    {
        self.sweep();
        if let Some(p) = self.approvals.get(&op) {
            if !p.user.eq_ignore_ascii_case(user) {
                return Some(Err(p.user.clone()));
            }
            return self.approvals.remove(&op).map(|p| Ok(p.payload));
        }
        let code = self
            .confirms
            .iter()
            .find(|(_, p)| p.payload.op() == op)
            .map(|(c, _)| c.clone())?;
        let p = self.confirms.get(&code)?;
        if !p.user.eq_ignore_ascii_case(user) {
            return Some(Err(p.user.clone()));
        }
        self.confirms.remove(&code).map(|p| Ok(p.payload))
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        self.confirms.retain(|_, p| p.expires > now);
        self.approvals.retain(|_, p| p.expires > now);
    }
}

/// Rocket.Chat roles looked up per user, trusted for a while.
#[derive(Debug, Default)]
pub struct RoleCache {
    entries: HashMap<String, (Vec<String>, Instant)>,
}

impl RoleCache {
    pub fn get(&self, user: &str, ttl: Duration) -> Option<Vec<String>> {
        self.entries
            .get(user)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(r, _)| r.clone())
    }
    pub fn put(&mut self, user: &str, roles: Vec<String>) {
        self.entries
            .insert(user.to_string(), (roles, Instant::now()));
    }
}

/// The names a policy rule may give besides runbooks: every built-in command, the forms the
/// policy tells apart (`backup now` changes, `backup list` reads), and `*`.
pub fn built_in_policy_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for b in crate::command::builtin::ALL {
        names.push(b.name.to_string());
        names.extend(
            b.forms
                .iter()
                .map(|f| f.policy_name.to_string())
                .filter(|n| n != b.name),
        );
    }
    // Accepted in rules since they were first written, though `schedule` is the name asked about.
    names.extend(["schedule pause", "schedule resume", "*"].map(String::from));
    names
}

/// Pure: every command name in the environments' policies (allow rules and `allow_when_locked`)
/// that is neither a built-in command nor one of `runbooks`, with the key it is under and the
/// nearest known name. A typo there would quietly allow or forbid nothing.
pub fn unknown_command_names(
    environments: &BTreeMap<String, EnvironmentConfig>,
    runbooks: &[String],
) -> Vec<UnknownCommand> {
    let mut known = built_in_policy_names();
    known.extend(runbooks.iter().cloned());
    let nearest = |given: &str| {
        known
            .iter()
            .filter(|k| k.as_str() != "*")
            .map(|k| (strsim::levenshtein(&given.replace(['-', '_'], " "), k), k))
            .filter(|(d, _)| *d <= 3)
            .min()
            .map(|(_, k)| format!("; did you mean `{k}`?"))
            .unwrap_or_else(|| {
                format!(
                    "; known: {}",
                    known
                        .iter()
                        .filter(|k| !k.contains(' '))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    };
    let mut out = Vec::new();
    for (env, e) in environments {
        let lists = e
            .policy
            .allow
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    format!("environments.{env}.policy.allow[{i}].commands"),
                    &r.commands,
                )
            })
            .chain(std::iter::once((
                format!("environments.{env}.policy.allow_when_locked"),
                &e.policy.allow_when_locked,
            )));
        for (key, names) in lists {
            for name in names {
                if !known.contains(name) {
                    out.push(UnknownCommand {
                        key: key.clone(),
                        name: name.clone(),
                        hint: nearest(name),
                    });
                }
            }
        }
    }
    out
}

/// A command name in a policy rule that is neither built in nor a runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCommand {
    /// The list it is written in (`environments.prod.policy.allow[0].commands`).
    pub key: String,
    pub name: String,
    /// "; did you mean `…`?" or the list of known names.
    pub hint: String,
}

impl std::fmt::Display for UnknownCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key `{}`: unknown command `{}`{}",
            self.key, self.name, self.hint
        )
    }
}

#[cfg(test)]
mod tests;
