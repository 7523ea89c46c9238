//! `mailserver`: the admin CLI. Every change goes to the database and is then applied to the daemons.
//! Output is one record per line (tab-separated fields); errors go to stderr with exit status 1.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use mailserver::logging;
use mailserver::names::{Address, AliasSource, Destinations, Domain};
use mailserver::paths::Paths;
use mailserver::store::tracking::retention;
use mailserver::store::{Snapshot, accounts, admins, aliases, domains};
use mailserver::{apply, db, password};
use rusqlite::Connection;
use tracing::level_filters::LevelFilter;

#[derive(Parser)]
#[command(name = "mailserver", version, about = "Administer the mail server")]
struct Cli {
    /// The data directory (database, keys, mail, rendered configuration).
    #[arg(long, global = true, env = "DATA_DIR", default_value = mailserver::paths::DEFAULT_DATA_DIR)]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prepare the data directory (idempotent): directories, database, the first admin (its random
    /// password is printed once, on standard output; ADMIN_PASSWORD_FILE gives one instead), TLS
    /// certificate, settings from the environment, rendered configuration.
    Init,
    /// Render the configuration from the database and reload the daemons that need it.
    Apply,
    /// Manage domains.
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Print the DNS records to publish for DOMAIN, one zone-file line each.
    Dns { domain: String },
    /// Manage mail accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Manage aliases.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Manage dashboard admins.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Open tracking's stored data.
    #[command(subcommand)]
    Tracking(TrackingCmd),
    /// Run the applier: the root service that applies the configuration when the dashboard (which
    /// runs as its own user) asks over run/applier/applier.sock. Started by supervisord.
    Applier,
    /// Run as a supervisord event listener: retry Postfix's deferred mail when Dovecot is back.
    RequeueListener,
}

#[derive(Subcommand)]
enum DomainCmd {
    /// Add a domain and generate its RSA-2048 DKIM key.
    Add { domain: String },
    /// List domains: domain, active, DKIM selector.
    List,
    /// Remove a domain; refused while accounts or aliases use it unless --cascade.
    Remove {
        domain: String,
        /// Also remove the domain's accounts and aliases (their mail stays on disk).
        #[arg(long)]
        cascade: bool,
    },
    /// Rotate the DKIM key to a new selector (publish the new record from `mailserver dns`).
    Dkim { domain: String },
    /// Stop receiving and signing for a domain, keeping its accounts.
    Disable { domain: String },
    /// Undo `disable`.
    Enable { domain: String },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Add an account; the password is read from the first line of standard input.
    Add {
        address: String,
        #[arg(long)]
        password_stdin: bool,
        /// Mailbox quota in MiB (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        quota: u32,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List accounts: address, active, quota MiB, name.
    List,
    /// Remove an account (its mail stays on disk).
    Remove { address: String },
    /// Set an account's password from the first line of standard input.
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's quota in MiB (0 = unlimited).
    Quota { address: String, mb: u32 },
    /// Stop an account from receiving mail and logging in.
    Disable { address: String },
    /// Undo `disable`.
    Enable { address: String },
}

#[derive(Subcommand)]
enum AliasCmd {
    /// Add an alias: SOURCE (an address, or @domain for a catch-all) to comma-separated DESTINATION.
    Add {
        source: String,
        destination: String,
        /// Add an open-tracking pixel to HTML mail sent as this alias.
        #[arg(long)]
        tracking: bool,
    },
    /// List aliases: source, destinations, active, tracking.
    List,
    /// Remove an alias.
    Remove { source: String },
    /// Turn open tracking on or off for mail sent as SOURCE.
    Tracking {
        source: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Stop an alias from forwarding.
    Disable { source: String },
    /// Undo `disable`.
    Enable { source: String },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Reset an admin's password and turn off its 2FA; also ends every dashboard session and lifts
    /// every login lockout. Prints a new random password unless --password-stdin gives one.
    ResetPassword {
        #[arg(long, default_value = admins::DEFAULT_USERNAME)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum TrackingCmd {
    /// Delete tracked messages and opens older than TRACKING_RETENTION_DAYS now (the dashboard does
    /// it daily). Prints what was deleted: `messages N` and `opens N`.
    Purge,
}

fn read_password(flag: bool) -> Result<String> {
    if !flag {
        bail!("give the password on standard input with --password-stdin");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("could not read the password from standard input")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("the password on standard input is empty");
    }
    Ok(pw)
}

fn main() -> ExitCode {
    logging::to_stderr(LevelFilter::WARN);
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut ctx = Ctx::new(cli.data);
    match cli.command {
        // These three open no database: `init` makes it, the services open their own.
        Command::Init => init(&ctx.paths),
        Command::Applier => Ok(mailserver::applier::serve(&ctx.paths)?),
        Command::RequeueListener => Ok(mailserver::requeue::run(&ctx.paths)?),
        Command::Apply => ctx.apply(),
        Command::Domain(cmd) => domain(cmd, &mut ctx),
        Command::Dns { domain } => dns(&domain, &mut ctx),
        Command::Account(cmd) => account(cmd, &mut ctx),
        Command::Alias(cmd) => alias(cmd, &mut ctx),
        Command::Admin(cmd) => admin(cmd, &mut ctx),
        Command::Tracking(cmd) => tracking(cmd, &mut ctx),
    }
}

/// What the subcommands share: the data directory, and the database, opened on first use.
struct Ctx {
    paths: Paths,
    conn: Option<db::PooledConnection>,
}

impl Ctx {
    fn new(data: PathBuf) -> Self {
        Self {
            paths: Paths::new(data),
            conn: None,
        }
    }

    /// The main database with tracking.db attached, as the dashboard opens them; an error (asking for `init`) when there is none yet.
    fn conn(&mut self) -> Result<&mut Connection> {
        open(&self.paths, &mut self.conn)
    }

    /// Applies the database, as it now is, to the daemons: after every change.
    fn apply(&mut self) -> Result<()> {
        let conn = open(&self.paths, &mut self.conn)?;
        apply::apply(&self.paths, conn).context("the change is saved, but applying it failed")?;
        Ok(())
    }
}

/// Opens the database into `slot` unless it is open already.
fn open<'a>(
    paths: &Paths,
    slot: &'a mut Option<db::PooledConnection>,
) -> Result<&'a mut Connection> {
    let conn = match slot.take() {
        Some(conn) => conn,
        None => {
            if !paths.db().exists() {
                bail!(
                    "no database at {}: run `mailserver init` first",
                    paths.db().display()
                );
            }
            db::open_dashboard(paths, 1)?.get()?
        }
    };
    Ok(slot.insert(conn))
}

fn init(paths: &Paths) -> Result<()> {
    let report = mailserver::init::init(paths, |k| std::env::var(k).ok())?;
    if let Some(admin) = &report.created_admin {
        print_created_admin(admin)?;
    }
    eprintln!(
        "initialised {} for {}{}{}; wrote {} file(s)",
        paths.data.display(),
        report.settings.hostname,
        match &report.created_admin {
            Some(admin) if admin.replaced_default => "; replaced the old default admin password",
            Some(_) => "; created the dashboard admin",
            None => "",
        },
        if report.created_certificate {
            "; made a self-signed certificate"
        } else {
            ""
        },
        report.apply.written.len()
    );
    Ok(())
}

/// Tells the operator the first admin's password, once: on standard output, which `docker compose
/// logs` shows. A framed block so it stands out among the daemons' start-up lines.
fn print_created_admin(admin: &admins::CreatedAdmin) -> Result<()> {
    let what = if admin.replaced_default {
        "replaced the old default password `admin` of the dashboard admin"
    } else {
        "created the dashboard admin"
    };
    let mut out = std::io::stdout().lock();
    match &admin.generated_password {
        Some(pw) => {
            let rule = "*".repeat(72);
            writeln!(out, "{rule}")?;
            writeln!(out, "* mailserver: {what} {:?}", admin.username)?;
            writeln!(out, "*")?;
            writeln!(out, "*   admin password: {pw}")?;
            writeln!(out, "*")?;
            writeln!(
                out,
                "* (shown once; change it in Settings, or with `mailserver admin reset-password`)"
            )?;
            writeln!(out, "{rule}")?;
        }
        None => writeln!(
            out,
            "mailserver: {what} {:?} with the password from {}",
            admin.username,
            admins::PASSWORD_FILE_VAR
        )?,
    }
    out.flush()?;
    Ok(())
}

fn domain(cmd: DomainCmd, ctx: &mut Ctx) -> Result<()> {
    let conn = ctx.conn()?;
    match cmd {
        DomainCmd::Add { domain } => {
            domains::add(conn, &Domain::parse(&domain)?)?;
        }
        DomainCmd::List => {
            let mut out = std::io::stdout().lock();
            for d in domains::list(conn)? {
                let sel = d.dkim.as_ref().map_or("-", |k| k.selector.as_str());
                writeln!(out, "{}\t{}\t{sel}", d.domain, active(d.active))?;
            }
            return Ok(());
        }
        DomainCmd::Remove { domain, cascade } => {
            domains::remove(conn, &Domain::parse(&domain)?, cascade)?;
        }
        DomainCmd::Dkim { domain } => {
            let sel = domains::rotate_dkim(conn, &Domain::parse(&domain)?)?;
            writeln!(std::io::stdout(), "{sel}")?;
        }
        DomainCmd::Disable { domain } => {
            domains::set_active(conn, &Domain::parse(&domain)?, false)?;
        }
        DomainCmd::Enable { domain } => {
            domains::set_active(conn, &Domain::parse(&domain)?, true)?;
        }
    }
    ctx.apply()
}

fn dns(domain: &str, ctx: &mut Ctx) -> Result<()> {
    let conn = ctx.conn()?;
    let domain = Domain::parse(domain)?;
    let d = domains::get(conn, &domain)?;
    let snapshot = Snapshot::read(conn)?;
    // A key still being made (apply has not run since it was asked for) has no record yet.
    let key = d
        .dkim
        .as_ref()
        .and_then(|k| Some((&k.selector, k.public_b64.as_deref()?)));
    let mut out = std::io::stdout().lock();
    for r in mailserver::dns::records(&domain, &snapshot.settings.hostname, key) {
        writeln!(out, "{}", r.zone_line())?;
    }
    Ok(())
}

fn account(cmd: AccountCmd, ctx: &mut Ctx) -> Result<()> {
    let conn = ctx.conn()?;
    match cmd {
        AccountCmd::Add {
            address,
            password_stdin,
            quota,
            name,
        } => {
            let address = Address::parse(&address)?;
            let pw = read_password(password_stdin)?;
            accounts::add(conn, &address, &pw, quota, &name)?;
        }
        AccountCmd::List => {
            let mut out = std::io::stdout().lock();
            for a in accounts::list(conn)? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    a.address,
                    active(a.active),
                    a.quota_mb,
                    a.name
                )?;
            }
            return Ok(());
        }
        AccountCmd::Remove { address } => {
            accounts::remove(conn, &Address::parse(&address)?)?;
        }
        AccountCmd::Passwd {
            address,
            password_stdin,
        } => {
            let address = Address::parse(&address)?;
            let pw = read_password(password_stdin)?;
            accounts::set_password(conn, &address, &pw)?;
        }
        AccountCmd::Quota { address, mb } => {
            accounts::set_quota(conn, &Address::parse(&address)?, mb)?;
        }
        AccountCmd::Disable { address } => {
            accounts::set_active(conn, &Address::parse(&address)?, false)?;
        }
        AccountCmd::Enable { address } => {
            accounts::set_active(conn, &Address::parse(&address)?, true)?;
        }
    }
    ctx.apply()
}

fn alias(cmd: AliasCmd, ctx: &mut Ctx) -> Result<()> {
    let conn = ctx.conn()?;
    match cmd {
        AliasCmd::Add {
            source,
            destination,
            tracking,
        } => {
            aliases::add(
                conn,
                &AliasSource::parse(&source)?,
                &Destinations::parse(&destination)?,
                tracking,
            )?;
        }
        AliasCmd::List => {
            let mut out = std::io::stdout().lock();
            for a in aliases::list(conn)? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    a.source,
                    a.destinations,
                    active(a.active),
                    if a.tracking_enabled { "tracking" } else { "-" }
                )?;
            }
            return Ok(());
        }
        AliasCmd::Remove { source } => {
            aliases::remove(conn, &AliasSource::parse(&source)?)?;
        }
        AliasCmd::Tracking { source, state } => {
            aliases::set_tracking(conn, &AliasSource::parse(&source)?, state == "on")?;
        }
        AliasCmd::Disable { source } => {
            aliases::set_active(conn, &AliasSource::parse(&source)?, false)?;
        }
        AliasCmd::Enable { source } => {
            aliases::set_active(conn, &AliasSource::parse(&source)?, true)?;
        }
    }
    ctx.apply()
}

/// Admins live only in the main database, which no daemon reads: nothing to apply.
fn admin(cmd: AdminCmd, ctx: &mut Ctx) -> Result<()> {
    let conn = ctx.conn()?;
    match cmd {
        AdminCmd::ResetPassword {
            username,
            password_stdin,
        } => {
            let pw = if password_stdin {
                read_password(true)?
            } else {
                let pw = password::random(admins::GENERATED_PASSWORD_LEN);
                writeln!(std::io::stdout(), "{pw}")?;
                pw
            };
            let report =
                admins::reset_password(conn, &username, &pw, mailserver::store::unix_now())?;
            // On stderr: standard output carries the password alone, for scripts.
            eprintln!(
                "reset the password of {username}; ended {} dashboard session(s) and lifted {} login lockout(s)",
                report.sessions_ended, report.lockouts_cleared
            );
        }
    }
    Ok(())
}

/// The tracking tables are only read by the dashboard: nothing to apply.
fn tracking(cmd: TrackingCmd, ctx: &mut Ctx) -> Result<()> {
    let conn = ctx.conn()?;
    match cmd {
        TrackingCmd::Purge => {
            let (_, purged) = retention::purge_as_configured(conn, retention::Chunks::default())?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "messages\t{}", purged.messages)?;
            writeln!(out, "opens\t{}", purged.opens)?;
        }
    }
    Ok(())
}

fn active(on: bool) -> &'static str {
    if on { "active" } else { "disabled" }
}
