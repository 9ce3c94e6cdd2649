//! `tokengate user add|list|disable|enable|set-roles|import`: account
//! administration straight on the database, for operators.

use secrecy::ExposeSecret as _;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::cli::output::stdout_line;
use crate::cli::{Failure, UserCommand};
use crate::domain::{Email, Roles};
use crate::infra::audit::AuditEvent;
use crate::infra::clock::{Clock, SystemClock};
use crate::infra::config::{Overrides, Settings};
use crate::infra::password::{Hasher, check_stored_hash_costs};
use crate::infra::ratelimit::{InProcessThrottle, LoginLimits};
use crate::service::{Accounts, Actor, Denylist, NewAccount, ServiceError};
use crate::store::{Store, User};

fn input(e: impl std::fmt::Display) -> Failure {
    Failure::Input(e.to_string())
}

/// Runs a `user` subcommand.
pub fn run(cmd: UserCommand) -> Result<(), Failure> {
    let data = match &cmd {
        UserCommand::Add { data, .. }
        | UserCommand::List { data, .. }
        | UserCommand::Disable { data, .. }
        | UserCommand::Enable { data, .. }
        | UserCommand::SetRoles { data, .. }
        | UserCommand::Import { data, .. } => data.clone(),
    };
    let settings = super::load_settings(&data, Overrides::default())?;
    super::require_existing_data(&settings, super::Opens::Database)?;
    super::block_on(async move {
        let store = Store::connect(settings.database_url.expose_secret())
            .await
            .map_err(input)?;
        let result = dispatch(cmd, &settings, &store).await;
        store.close().await;
        result
    })?
}

async fn dispatch(cmd: UserCommand, settings: &Settings, store: &Store) -> Result<(), Failure> {
    let now = SystemClock.now().as_secs();
    let accounts = || accounts(settings, store);
    match cmd {
        UserCommand::Add {
            email,
            role,
            password_stdin,
            ..
        } => {
            // Refuse a bad email or role before asking for a password.
            Email::parse(&email).map_err(input)?;
            let mut roles = vec!["user".to_owned()];
            roles.extend(role);
            Roles::parse(&roles).map_err(input)?;
            let password = read_password(password_stdin)?;
            let account = NewAccount::parse(&email, &password, &roles)?;
            let user = accounts()?.create(account, &Actor::Cli).await?;
            stdout_line!("{}", user.id)?;
            Ok(())
        }
        UserCommand::List { email, .. } => {
            let mut after: Option<String> = None;
            stdout_line!(
                "{:<24} {:<36} {:<20} {:<9} created",
                "id",
                "email",
                "roles",
                "disabled"
            )?;
            loop {
                let page = store
                    .list_users(email.as_deref(), after.as_deref(), 500)
                    .await
                    .map_err(input)?;
                for u in &page {
                    stdout_line!(
                        "{:<24} {:<36} {:<20} {:<9} {}",
                        u.id,
                        u.email,
                        u.roles,
                        if u.disabled { "yes" } else { "no" },
                        super::rfc3339(u.created_at)
                    )?;
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.email.clone()),
                    _ => return Ok(()),
                }
            }
        }
        UserCommand::Disable { email, .. } => update(&accounts()?, &email, None, Some(true)).await,
        UserCommand::Enable { email, .. } => update(&accounts()?, &email, None, Some(false)).await,
        UserCommand::SetRoles { email, roles, .. } => {
            Roles::parse(&roles).map_err(input)?;
            update(&accounts()?, &email, Some(&roles), None).await
        }
        UserCommand::Import {
            file,
            skip_existing,
            ..
        } => import(store, &file, skip_existing, now).await,
    }
}

fn hasher(settings: &Settings) -> Result<Hasher, Failure> {
    Hasher::new(
        settings.argon2_memory_kib,
        settings.argon2_iterations,
        settings.argon2_parallelism,
        1,
    )
    .map_err(input)
}

/// The account operations for this command. Revocations it makes reach
/// running servers at once through Redis when `redis_url` is set, and in
/// any case through their 2-second database sync; the throttle here serves
/// nobody else.
fn accounts(settings: &Settings, store: &Store) -> Result<Accounts, Failure> {
    let redis = crate::startup::redis_connection(settings).map_err(input)?;
    let denylist = Denylist::from_settings(settings, redis);
    let throttle = Arc::new(InProcessThrottle::new(LoginLimits {
        per_account_and_client: settings.login_max_failures,
        per_client: settings.login_ip_max_failures,
        per_account_before_backoff: settings.login_account_max_failures,
        window: crate::infra::config::secs(settings.login_failure_window),
    }));
    Ok(Accounts::new(
        store.clone(),
        hasher(settings)?,
        Arc::new(SystemClock),
        denylist,
        throttle,
        settings.ipv6_prefix_len,
    ))
}

fn new_user(email: &str, password_hash: String, roles: &Roles) -> Result<User, Failure> {
    User::new(email, password_hash, roles).ok_or_else(|| input("random generator failed"))
}

/// The password from stdin (`--password-stdin`), or typed twice without echo.
fn read_password(from_stdin: bool) -> Result<Zeroizing<String>, Failure> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(input)?;
        return Ok(Zeroizing::new(
            line.trim_end_matches(['\n', '\r']).to_owned(),
        ));
    }
    if !std::io::stdin().is_terminal() {
        return Err(input(
            "no terminal to type the password on: pipe it with --password-stdin",
        ));
    }
    let first = Zeroizing::new(rpassword::prompt_password("Password: ").map_err(input)?);
    let second = Zeroizing::new(rpassword::prompt_password("Again: ").map_err(input)?);
    if *first != *second {
        return Err(input("the passwords differ"));
    }
    Ok(first)
}

async fn update(
    accounts: &Accounts,
    email: &str,
    roles: Option<&[String]>,
    disabled: Option<bool>,
) -> Result<(), Failure> {
    let not_found = |e: ServiceError| match e {
        ServiceError::NotFound => input(format!("no user {}", email.trim())),
        other => other.into(),
    };
    let user = accounts.by_email(email).await.map_err(not_found)?;
    let (updated, ended) = accounts
        .update(&user.id, roles, disabled, &Actor::Cli)
        .await
        .map_err(not_found)?;
    stdout_line!(
        "{}: roles {}, {}{}",
        updated.email,
        updated.roles,
        if updated.disabled {
            "disabled"
        } else {
            "enabled"
        },
        if ended == 0 {
            String::new()
        } else {
            format!(", {} ended", count(ended as u64, "session", "sessions"))
        }
    )?;
    Ok(())
}

async fn import(store: &Store, file: &Path, skip_existing: bool, now: i64) -> Result<(), Failure> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .map_err(|e| input(format!("{}: {e}", file.display())))?;
    let headers = reader.headers().map_err(input)?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(email_col), Some(hash_col)) = (column("email"), column("password_hash")) else {
        return Err(input(format!(
            "{}: needs the columns email, password_hash (and optionally roles)",
            file.display()
        )));
    };
    let roles_col = column("roles");
    let mut users = Vec::new();
    let mut lines = Vec::new();
    let mut rejected: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (index, record) in reader.records().enumerate() {
        // Line 1 is the header.
        let line = index as u64 + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                rejected.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let email = match Email::parse(record.get(email_col).unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                rejected.push(format!("line {line}: {e}"));
                continue;
            }
        };
        if let Some(first) = seen.insert(email.as_str().to_owned(), line) {
            rejected.push(format!("line {line}: {email} repeats line {first}"));
            continue;
        }
        let hash = record.get(hash_col).unwrap_or_default();
        // Malformed hashes and costs over the ceilings: a 4 GiB argon2
        // memory cost would be spent at this user's every login.
        if let Err(e) = check_stored_hash_costs(hash) {
            rejected.push(format!("line {line}: {e}"));
            continue;
        }
        let roles_field = roles_col.and_then(|c| record.get(c)).unwrap_or_default();
        let roles: Vec<&str> = roles_field
            .split([' ', ';', ','])
            .filter(|r| !r.is_empty())
            .collect();
        let roles = if roles.is_empty() {
            Roles::parse(&["user"])
        } else {
            Roles::parse(&roles)
        };
        let roles = match roles {
            Ok(r) => r,
            Err(e) => {
                rejected.push(format!("line {line}: {e}"));
                continue;
            }
        };
        users.push(new_user(email.as_str(), hash.to_owned(), &roles)?);
        lines.push(line);
    }
    if !skip_existing {
        let emails: Vec<String> = users.iter().map(|u| u.email.clone()).collect();
        let existing = store.existing_emails(&emails).await.map_err(input)?;
        for (user, line) in users.iter().zip(&lines) {
            if existing.contains(&user.email) {
                rejected.push(format!(
                    "line {line}: {} already has an account (use --skip-existing)",
                    user.email
                ));
            }
        }
    }
    if !rejected.is_empty() {
        rejected.sort_by_key(|r| {
            r.split(':')
                .next()
                .and_then(|l| l.trim_start_matches("line ").parse::<u64>().ok())
        });
        for r in &rejected {
            eprintln!("{r}");
        }
        let refused = if rejected.len() == 1 {
            "1 row is wrong (above)".to_owned()
        } else {
            format!("{} rows are wrong (above)", rejected.len())
        };
        return Err(input(format!("{refused}; nothing was imported")));
    }
    let bar = indicatif::ProgressBar::new(users.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} users")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let event = AuditEvent::new("users_imported")
        .with("actor", "cli")
        .with("file", file.display().to_string());
    let inserted = store
        .import_users(&users, skip_existing, now, &event, &|n| bar.inc(n))
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(crate::store::Unique::Email) => {
                input("an email was taken while importing; nothing imported")
            }
            other => input(other),
        })?;
    bar.finish_and_clear();
    let skipped = users.len() as u64 - inserted;
    let imported = count(inserted, "user", "users");
    match (inserted, skipped) {
        (_, 0) => stdout_line!("imported {imported}")?,
        (0, _) => stdout_line!("nothing to import: every user in the file already has an account")?,
        (_, 1) => stdout_line!("imported {imported} and skipped 1 that already had an account")?,
        _ => stdout_line!("imported {imported} and skipped {skipped} that already had accounts")?,
    }
    Ok(())
}

/// "1 user", "2 users": a count with its noun agreeing.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
