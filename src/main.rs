//! The `gateway` binary: a thin CLI over the library.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use gateway::auth::jwt::{access_claims, now};
use gateway::config::{self, Config, TlsSetting};

/// A TLS-terminating reverse-proxy authentication gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for `run` when no subcommand is given).
    #[arg(
        long,
        short,
        global = true,
        default_value = "gateway.yaml",
        env = "GATEWAY_CONFIG"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the configuration and print the route table.
    Check,
    /// Read a password from stdin and print an argon2id PHC hash for the users file.
    HashPassword,
    /// Mint an access token with the configured signing key (for testing).
    Token {
        /// The subject (`sub`), usually an email.
        #[arg(long)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Lifetime, e.g. `15m` (default: the configured access token lifetime).
        #[arg(long)]
        ttl: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Check => check(&cli.config),
        Command::HashPassword => hash_password(),
        Command::Token { sub, roles, ttl } => token(&cli.config, &sub, roles, ttl.as_deref()),
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration\n{e}"))
}

fn run(path: &Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Building the config needs no runtime; the worker count comes from it.
    let config = Arc::new(load(path)?);
    if let Some(workers) = config.server.workers {
        runtime.worker_threads(workers);
    }
    runtime.build()?.block_on(async move {
        let server = gateway::server::Server::bind(config).await?;
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    println!("{}: configuration is valid", path.display());
    println!("\nlisteners:");
    for l in &config.listeners {
        let tls = match &l.tls {
            TlsSetting::Plaintext => "plain http".to_owned(),
            TlsSetting::SelfSigned(s) => format!("tls, self-signed (sha256 {})", s.fingerprint),
            TlsSetting::Files { cert_file, .. } => format!("tls, {}", cert_file.display()),
        };
        println!("  {:<12} {:<22} {tls}", l.name, l.address);
    }
    println!("\nupstreams:");
    for (name, u) in &config.upstreams {
        println!("  {:<12} {}", name, u.urls().join(", "));
    }
    if let Some(auth) = &config.auth {
        println!(
            "\nlogin: POST {} ({} users)",
            auth.login_path,
            auth.users.len()
        );
    }
    println!("\nroutes (in match order):");
    println!(
        "  {:<16} {:<24} {:<18} {:<9} {:<12} require",
        "NAME", "PATH", "METHODS", "AUTH", "UPSTREAM"
    );
    for r in config.routes.routes() {
        let methods = r.methods.as_ref().map_or("*".to_owned(), |m| {
            m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
        });
        let auth = match r.auth {
            gateway::routing::AuthMode::Required => "required",
            gateway::routing::AuthMode::Public => "public",
        };
        let mut require = Vec::new();
        require.extend(r.require.roles.iter().map(|x| format!("role:{x}")));
        require.extend(r.require.scopes.iter().map(|x| format!("scope:{x}")));
        require.extend(r.require.claims.iter().map(|(k, v)| format!("{k}={v}")));
        let target = match &r.rewrite {
            Some(rw) => format!("{} -> {rw}", r.upstream.name),
            None => r.upstream.name.clone(),
        };
        println!(
            "  {:<16} {:<24} {:<18} {:<9} {:<12} {}",
            r.name,
            r.matcher.to_string(),
            methods,
            auth,
            target,
            require.join(" ")
        );
    }
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("password: ").context("cannot read password")?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read stdin")?;
        s.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        bail!("empty password");
    }
    println!(
        "{}",
        gateway::auth::users::hash_password(password.as_bytes()).map_err(anyhow::Error::msg)?
    );
    Ok(())
}

fn token(path: &Path, sub: &str, roles: Vec<String>, ttl: Option<&str>) -> anyhow::Result<()> {
    let config = load(path)?;
    let auth = config
        .auth
        .as_ref()
        .context("the configuration has no auth section")?;
    let mut rules = auth.rules.clone();
    if let Some(ttl) = ttl {
        let ttl: Duration = config::parse_duration(ttl).map_err(anyhow::Error::msg)?;
        rules.ttl_secs = ttl.as_secs();
    }
    let claims = access_claims(sub, &roles, &Default::default(), &rules, now());
    println!("{}", auth.keys.sign(&claims).map_err(anyhow::Error::msg)?);
    Ok(())
}
