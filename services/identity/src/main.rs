//! The identity binary: `identity` serves, `identity migrate` only migrates, and
//! `identity create-user --email E --role admin|agent|customer [--name N] [--account A]` creates a
//! user (the founder's first admin, support agents) with the password read from standard input.

use std::{io::BufRead, process::ExitCode};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("create-user") {
        return match create_user(&args[2..]).await {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("identity create-user: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    sb_runtime::main(identity::def()).await
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

async fn create_user(args: &[String]) -> anyhow::Result<String> {
    use identity::domain::{Email, Password, Role};
    let email = Email::parse(flag(args, "--email").ok_or_else(|| anyhow::anyhow!("--email is required"))?)?;
    let role: Role =
        flag(args, "--role").and_then(|r| r.parse().ok()).ok_or_else(|| anyhow::anyhow!("--role must be admin, agent or customer"))?;
    let name = flag(args, "--name").unwrap_or(email.as_str()).to_owned();
    let account = flag(args, "--account").unwrap_or("Staff").to_owned();
    eprint!("password for {email} (read from standard input): ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = Password::parse(line.trim_end_matches(['\r', '\n']))?;
    let config = sb_runtime::ServiceConfig::from_env(identity::SERVICE)?;
    let cfg = identity::config::IdentityConfig::load(&config)?;
    let pool = sb_runtime::prepare_database(&config, &identity::def()).await?;
    let identity = identity::service::Identity::new(pool, cfg);
    match identity.create_user(&account, &email, &name, role, &password).await {
        Ok(u) => Ok(format!("created {} {} ({})", role.as_str(), u.email, u.id)),
        Err(identity::error::IdentityError::EmailTaken) => anyhow::bail!("a user with email {email} already exists"),
        Err(e) => Err(e.into()),
    }
}
