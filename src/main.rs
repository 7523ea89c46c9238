//! `mailserver`: the admin CLI. Every change goes to the database and is then applied to the daemons.
//! Output is one record per line (tab-separated fields); errors go to stderr with exit status 1.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use mailserver::names::{Address, AliasSource, Destinations, Domain};
use mailserver::settings::Paths;
use mailserver::store::{Snapshot, accounts, admins, aliases, domains};
use mailserver::{apply, db, dns, password};

#[derive(Parser)]
#[command(name = "mailserver", version, about = "Administer the mail server")]
struct Cli {
    /// The data directory (database, keys, mail, rendered configuration).
    #[arg(long, global = true, env = "DATA_DIR", default_value = "/data")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prepare the data directory (idempotent): directories, database, default admin, TLS certificate,
    /// settings from the environment, rendered configuration.
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
    /// Reset an admin's password and turn off its 2FA. Prints a new random password unless
    /// --password-stdin gives one.
    ResetPassword {
        #[arg(long, default_value = admins::DEFAULT_USERNAME)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: supervisord and scripts keep the output in plain files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
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
    let paths = Paths::new(&cli.data);
    if let Command::Init = cli.command {
        let report = mailserver::init::init(&paths, |k| std::env::var(k).ok())?;
        eprintln!(
            "initialised {} for {}{}{}; wrote {} file(s)",
            paths.data.display(),
            report.settings.hostname,
            if report.created_admin {
                "; created admin/admin (change it!)"
            } else {
                ""
            },
            if report.created_certificate {
                "; made a self-signed certificate"
            } else {
                ""
            },
            report.apply.written.len()
        );
        return Ok(());
    }
    match cli.command {
        Command::Applier => return Ok(mailserver::applier::serve(&paths)?),
        Command::RequeueListener => return Ok(mailserver::requeue::run(&paths)?),
        _ => {}
    }
    if !paths.db().exists() {
        bail!(
            "no database at {}: run `mailserver init` first",
            paths.db().display()
        );
    }
    let pool = db::open(&paths.db(), 1)?;
    let mut conn = pool.get()?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let changed = match cli.command {
        Command::Init | Command::Applier | Command::RequeueListener => {
            unreachable!("handled above")
        }
        Command::Apply => true,
        Command::Domain(cmd) => match cmd {
            DomainCmd::Add { domain } => {
                domains::add(&conn, &Domain::parse(&domain)?)?;
                true
            }
            DomainCmd::List => {
                for d in domains::list(&conn)? {
                    let sel = d.dkim.as_ref().map_or("-", |k| k.selector.as_str());
                    writeln!(out, "{}\t{}\t{sel}", d.domain, active(d.active))?;
                }
                false
            }
            DomainCmd::Remove { domain, cascade } => {
                domains::remove(&conn, &Domain::parse(&domain)?, cascade)?;
                true
            }
            DomainCmd::Dkim { domain } => {
                let sel = domains::rotate_dkim(&conn, &Domain::parse(&domain)?)?;
                writeln!(out, "{sel}")?;
                true
            }
            DomainCmd::Disable { domain } => {
                domains::set_active(&conn, &Domain::parse(&domain)?, false)?;
                true
            }
            DomainCmd::Enable { domain } => {
                domains::set_active(&conn, &Domain::parse(&domain)?, true)?;
                true
            }
        },
        Command::Dns { domain } => {
            let domain = Domain::parse(&domain)?;
            let d = domains::get(&conn, &domain)?;
            let snapshot = Snapshot::read(&mut conn)?;
            let key = d
                .dkim
                .as_ref()
                .map(|k| (&k.selector, k.public_b64.as_str()));
            for r in dns::records(&domain, &snapshot.settings.hostname, key) {
                writeln!(out, "{}", r.zone_line())?;
            }
            false
        }
        Command::Account(cmd) => match cmd {
            AccountCmd::Add {
                address,
                password_stdin,
                quota,
                name,
            } => {
                let address = Address::parse(&address)?;
                let pw = read_password(password_stdin)?;
                accounts::add(&conn, &address, &pw, quota, &name)?;
                true
            }
            AccountCmd::List => {
                for a in accounts::list(&conn)? {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        a.address,
                        active(a.active),
                        a.quota_mb,
                        a.name
                    )?;
                }
                false
            }
            AccountCmd::Remove { address } => {
                accounts::remove(&conn, &Address::parse(&address)?)?;
                true
            }
            AccountCmd::Passwd {
                address,
                password_stdin,
            } => {
                let address = Address::parse(&address)?;
                let pw = read_password(password_stdin)?;
                accounts::set_password(&conn, &address, &pw)?;
                true
            }
            AccountCmd::Quota { address, mb } => {
                accounts::set_quota(&conn, &Address::parse(&address)?, mb)?;
                true
            }
            AccountCmd::Disable { address } => {
                accounts::set_active(&conn, &Address::parse(&address)?, false)?;
                true
            }
            AccountCmd::Enable { address } => {
                accounts::set_active(&conn, &Address::parse(&address)?, true)?;
                true
            }
        },
        Command::Alias(cmd) => match cmd {
            AliasCmd::Add {
                source,
                destination,
                tracking,
            } => {
                aliases::add(
                    &conn,
                    &AliasSource::parse(&source)?,
                    &Destinations::parse(&destination)?,
                    tracking,
                )?;
                true
            }
            AliasCmd::List => {
                for a in aliases::list(&conn)? {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        a.source,
                        a.destinations,
                        active(a.active),
                        if a.tracking_enabled { "tracking" } else { "-" }
                    )?;
                }
                false
            }
            AliasCmd::Remove { source } => {
                aliases::remove(&conn, &AliasSource::parse(&source)?)?;
                true
            }
            AliasCmd::Tracking { source, state } => {
                aliases::set_tracking(&conn, &AliasSource::parse(&source)?, state == "on")?;
                true
            }
            AliasCmd::Disable { source } => {
                aliases::set_active(&conn, &AliasSource::parse(&source)?, false)?;
                true
            }
            AliasCmd::Enable { source } => {
                aliases::set_active(&conn, &AliasSource::parse(&source)?, true)?;
                true
            }
        },
        Command::Admin(AdminCmd::ResetPassword {
            username,
            password_stdin,
        }) => {
            let pw = if password_stdin {
                read_password(true)?
            } else {
                let pw = password::random(20);
                writeln!(out, "{pw}")?;
                pw
            };
            admins::reset_password(&conn, &username, &pw)?;
            false
        }
    };
    if changed {
        apply::apply(&paths, &mut conn).context("the change is saved, but applying it failed")?;
    }
    Ok(())
}

fn active(on: bool) -> &'static str {
    if on { "active" } else { "disabled" }
}
