//! `switchboard`: the operator's command line for the event bus — queue depths, the event catalog,
//! and dead-lettered messages (show, replay, purge).

use std::{
    io::{BufRead, IsTerminal, Write},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use sb_bus::{
    BusConfig,
    catalog::{CATALOG, SERVICES},
    config::{DEFAULT_RETRY_DELAYS, parse_delays},
    dlq::{Ops, Selector},
};
use uuid::Uuid;

mod management;

/// Prints a line to stdout, ignoring a closed pipe (`switchboard catalog | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Operate Switchboard's event bus: queues, catalog and dead letters")]
struct Cli {
    /// Broker URL (the password is never printed).
    #[arg(
        long,
        env = "SWITCHBOARD_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_default_value = true,
        global = true
    )]
    amqp_url: String,
    /// Prefix of exchange and queue names, as configured for the services.
    #[arg(long, env = "SWITCHBOARD_BUS_PREFIX", default_value = "switchboard", global = true)]
    prefix: String,
    /// The services' retry ladder: names the retry queues the DLQ commands use, and those
    /// `queues` shows when the management API cannot be asked.
    #[arg(long, env = "SWITCHBOARD_RETRY_DELAYS", default_value = DEFAULT_RETRY_DELAYS, global = true)]
    retry_delays: String,
    /// RabbitMQ's management API, which `queues` asks for the retry queues the services declared
    /// (default: the broker's host, port 15672; the AMQP URL's user and password).
    #[arg(long, env = "SWITCHBOARD_RABBITMQ_MANAGEMENT_URL", global = true)]
    management_url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every event type, its producer and meaning.
    Catalog,
    /// Message counts of work, retry and dead-letter queues (the retry queues as the broker has
    /// them, found through its management API).
    Queues {
        /// Services to show (default: all six).
        services: Vec<String>,
    },
    /// Dead-lettered (parked) messages.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Each service's DLQ with its message count.
    List {
        /// Services to show (default: all six).
        services: Vec<String>,
    },
    /// Parked messages of one service with their reasons; nothing is removed.
    Show {
        service: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Put parked messages back on the service's work queue (already-applied events are skipped there).
    Replay {
        service: String,
        #[command(flatten)]
        which: Which,
    },
    /// Delete parked messages for good.
    Purge {
        service: String,
        #[command(flatten)]
        which: Which,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// Every parked message of the service.
    #[arg(long)]
    all: bool,
    /// The message of one event id.
    #[arg(long, value_name = "EVENT_ID")]
    event: Option<Uuid>,
    /// The messages of one account.
    #[arg(long, value_name = "ACCOUNT_ID")]
    account: Option<Uuid>,
    /// The messages of one versioned event type, e.g. billing.access.changed.v1.
    #[arg(long, value_name = "EVENT_TYPE")]
    event_type: Option<String>,
}

impl Which {
    fn selector(&self) -> Selector {
        match (self.event, self.account, &self.event_type) {
            (Some(id), _, _) => Selector::Event(id),
            (_, Some(id), _) => Selector::Account(id),
            (_, _, Some(t)) => Selector::EventType(t.clone()),
            _ => Selector::All,
        }
    }
    fn describe(&self, service: &str) -> String {
        self.selector().describe(service)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn services_or_all(services: &[String]) -> Vec<&str> {
    if services.is_empty() { SERVICES.to_vec() } else { services.iter().map(String::as_str).collect() }
}

fn print_json(v: &impl serde::Serialize) {
    out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Catalog = cli.command {
        if cli.json {
            let rows: Vec<_> = CATALOG
                .iter()
                .map(|s| serde_json::json!({"type": s.event_type, "producer": s.producer, "description": s.description}))
                .collect();
            print_json(&rows);
        } else {
            for s in CATALOG {
                out!("{:<32} {:<15} {}", s.event_type, s.producer, s.description);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut cfg = BusConfig::new(cli.amqp_url.clone());
    cfg.prefix = cli.prefix.clone();
    cfg.retry_delays = parse_delays(&cli.retry_delays).map_err(|e| anyhow::anyhow!("SWITCHBOARD_RETRY_DELAYS: {e}"))?;
    let redacted = cfg.redacted_url();
    let ops = Ops::connect(cfg).await.map_err(|e| anyhow::anyhow!("cannot reach RabbitMQ at {redacted}: {e}"))?;
    let code = match cli.command {
        Command::Catalog => ExitCode::SUCCESS,
        Command::Queues { services } => {
            let services = services_or_all(&services);
            let mgmt = management::Management::new(&cli.amqp_url, cli.management_url.as_deref())?;
            let depths = match mgmt.queue_names().await {
                Ok(names) => {
                    let mut queues = Vec::new();
                    for s in &services {
                        let mine = ops.queues_of(s)?;
                        let retry = management::retry_queues(&names, &cli.prefix, s);
                        for (role, q) in mine {
                            match role {
                                "retry" => {}
                                "dlq" => {
                                    queues.extend(retry.iter().map(|r| (s.to_string(), "retry", r.clone())));
                                    queues.push((s.to_string(), role, q));
                                }
                                _ => queues.push((s.to_string(), role, q)),
                            }
                        }
                    }
                    ops.depths_of(queues).await?
                }
                Err(e) => {
                    eprintln!(
                        "note: RabbitMQ's management API at {} did not list the queues ({e:#}); the retry queues shown are \
                         those of SWITCHBOARD_RETRY_DELAYS ({}), which may not be the services' ladder",
                        mgmt.url(),
                        cli.retry_delays
                    );
                    ops.depths(&services).await?
                }
            };
            if cli.json {
                print_json(&depths);
            } else {
                out!("{:<15} {:<6} {:>9}  QUEUE", "SERVICE", "ROLE", "MESSAGES");
                for d in depths {
                    let n = d.messages.map_or("missing".into(), |n| n.to_string());
                    out!("{:<15} {:<6} {:>9}  {}", d.service, d.role, n, d.queue);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Dlq(DlqCommand::List { services }) => {
            let depths: Vec<_> = ops.depths(&services_or_all(&services)).await?.into_iter().filter(|d| d.role == "dlq").collect();
            if cli.json {
                print_json(&depths);
            } else {
                out!("{:<15} {:>9}  QUEUE", "SERVICE", "PARKED");
                for d in depths {
                    let n = d.messages.map_or("missing".into(), |n| n.to_string());
                    out!("{:<15} {:>9}  {}", d.service, n, d.queue);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Dlq(DlqCommand::Show { service, limit }) => {
            let parked = ops.show(&service, limit).await?;
            if cli.json {
                print_json(&parked);
            } else if parked.is_empty() {
                out!("no parked messages for {service}");
            } else {
                for p in parked {
                    let id = p.event_id.map_or("-".into(), |i| i.to_string());
                    let account = p.account_id.map_or("-".into(), |i| i.to_string());
                    out!("event {id}  type {}  account {account}", p.event_type.as_deref().unwrap_or("-"));
                    out!("  reason:   {}", p.reason);
                    out!("  attempts: {}  failed at: {}", p.attempts, p.failed_at.as_deref().unwrap_or("-"));
                }
            }
            ExitCode::SUCCESS
        }
        Command::Dlq(DlqCommand::Replay { service, which }) => {
            let n = ops.replay(&service, which.selector()).await?;
            report(cli.json, "replayed", n);
            ExitCode::SUCCESS
        }
        Command::Dlq(DlqCommand::Purge { service, which, yes }) => {
            if !yes && !confirm(&which.describe(&service), &service)? {
                eprintln!("switchboard: purge cancelled; nothing was deleted");
                ops.close().await;
                return Ok(ExitCode::from(3));
            }
            let n = ops.purge(&service, which.selector()).await?;
            report(cli.json, "purged", n);
            ExitCode::SUCCESS
        }
    };
    ops.close().await;
    Ok(code)
}

fn report(json: bool, what: &str, n: usize) {
    if json {
        print_json(&serde_json::json!({ what: n }));
    } else {
        out!("{what} {n} message(s)");
    }
}

/// Asks the operator to type the service name; refuses when there is no terminal to ask on.
fn confirm(what: &str, service: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to purge without confirmation: no terminal to ask on; pass --yes to purge {what}");
    }
    eprint!("This deletes {what} for good. Type the service name ({service}) to confirm: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == service)
}
