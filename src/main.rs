//! The `gateway` binary: a thin CLI over the library.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use gateway::auth::jwt::{access_claims, now};
use gateway::config::{self, Config, LogFormat, TlsSetting};

/// mimalloc: measurably less time in malloc/free on the request path than glibc's
/// allocator (docs/benchmarks.md), and less fragmentation with many connections.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Say which route a request would take and whether it would be allowed, and why.
    Explain {
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request path (with an optional query).
        #[arg(long)]
        path: String,
        /// A bearer token to check against the route's policy.
        #[arg(long)]
        token: Option<String>,
    },
    /// Exit 0 when the URL answers 2xx (a Docker HEALTHCHECK without curl).
    Healthcheck {
        /// A plain-HTTP URL, e.g. http://127.0.0.1:9901/readyz.
        #[arg(long, default_value = "http://127.0.0.1:9901/readyz")]
        url: String,
    },
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

/// `println!` into a String (output is written at once by [`print_all`]).
macro_rules! outln {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Write to stdout, quietly stopping if the reader went away (`gateway check | head`).
fn print_all(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
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
        Command::Explain {
            method,
            path,
            token,
        } => explain(&cli.config, &method, &path, token.as_deref()),
        Command::Healthcheck { url } => healthcheck(&url),
        Command::HashPassword => hash_password(),
        Command::Token { sub, roles, ttl } => token(&cli.config, &sub, roles, ttl.as_deref()),
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration\n{e}"))
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(path: &Path) -> anyhow::Result<()> {
    // Building the config needs no runtime; the worker count and log format come from it.
    let config = Arc::new(load(path)?);
    init_logging(config.log_format);
    // One worker: a current-thread runtime, so connections, requests and the upstream
    // pool all run on one thread with no cross-thread wake-ups (the blocking pool for
    // password hashing still has its own threads).
    let mut runtime = match config.server.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    runtime.build()?.block_on(async move {
        let server = gateway::server::Server::bind(config).await?;
        let reloader = server.reloader();
        tokio::spawn(reloader.clone().watch());
        #[cfg(unix)]
        {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reloader.reload().await;
                }
            });
        }
        server.run(shutdown_signal()).await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn explain(path: &Path, method: &str, target: &str, token: Option<&str>) -> anyhow::Result<()> {
    let config = load(path)?;
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow::anyhow!("invalid method {method:?}"))?;
    let verdict = gateway::explain::explain(&config, &method, target, token);
    for step in &verdict.steps {
        println!("{step}");
    }
    if verdict.allowed {
        println!("verdict: allowed");
        Ok(())
    } else {
        println!("verdict: refused");
        std::process::exit(2);
    }
}

fn healthcheck(url: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let uri: http::Uri = url.parse().context("invalid URL")?;
    let authority = uri.authority().context("URL needs host:port")?;
    let port = authority.port_u16().unwrap_or(80);
    let mut stream = std::net::TcpStream::connect((authority.host(), port))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n",
        uri.path()
    )?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        bail!("{url} answered {status:?}")
    }
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
    let mut out = String::new();
    outln!(out, "{}: configuration is valid", path.display());
    outln!(out, "\nlisteners:");
    for l in &config.listeners {
        let tls = match &l.tls {
            TlsSetting::Plaintext => "plain http".to_owned(),
            TlsSetting::SelfSigned(s) => format!("tls, self-signed (sha256 {})", s.fingerprint),
            TlsSetting::Files { cert_file, .. } => format!("tls, {}", cert_file.display()),
        };
        outln!(out, "  {:<12} {:<22} {tls}", l.name, l.address);
    }
    outln!(out, "\nupstreams:");
    for (name, u) in &config.upstreams {
        outln!(out, "  {:<12} {}", name, u.urls().join(", "));
    }
    if let Some(auth) = &config.auth {
        outln!(
            out,
            "\nlogin: POST {} ({} users)",
            auth.login_path,
            auth.users.len()
        );
    }
    outln!(out, "\nroutes (in match order):");
    outln!(
        out,
        "  {:<16} {:<24} {:<18} {:<9} {:<12} require",
        "NAME",
        "PATH",
        "METHODS",
        "AUTH",
        "UPSTREAM"
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
        outln!(
            out,
            "  {:<16} {:<24} {:<18} {:<9} {:<12} {}",
            r.name,
            r.matcher.to_string(),
            methods,
            auth,
            target,
            require.join(" ")
        );
    }
    print_all(&out);
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
