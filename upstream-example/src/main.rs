//! `upstream-example`: a small, realistic "properties" (real-estate listings) HTTP
//! service used as the unmodified backend behind the authentication gateway.
//!
//! It deliberately contains **no authentication code at all**: it trusts every
//! request that reaches it, and relies on the gateway in front of it to decide who
//! gets through. Besides the listings API it offers a few diagnostic endpoints
//! (`/echo`, `/stream`, `/slow`, `/status/{code}`, `/health`) for testing the
//! gateway. It speaks plain HTTP/1.1 and HTTP/2 (prior knowledge), no TLS.
//!
//! Usage: `upstream-example [--listen ADDR]` (or `UPSTREAM_LISTEN=ADDR`), default
//! `127.0.0.1:5000`. Once bound it prints `listening on http://<addr>`.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use upstream_example::store::Store;
use upstream_example::{handle, SharedStore};

/// Address used when neither `--listen` nor `UPSTREAM_LISTEN` is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:5000";

/// Command-line help.
const USAGE: &str = "usage: upstream-example [--listen ADDR]\n\n\
    ADDR may also be set with UPSTREAM_LISTEN (default 127.0.0.1:5000).";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// Serve on this address.
    Serve(String),
    /// Print usage and exit.
    Help,
}

/// Parses the arguments (without the program name); `env` is `UPSTREAM_LISTEN`.
fn parse_args(
    mut args: impl Iterator<Item = String>,
    env: Option<String>,
) -> Result<Command, String> {
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => {
                let addr = args.next().ok_or("--listen needs an address")?;
                listen = Some(addr);
            }
            _ => match arg.strip_prefix("--listen=") {
                Some(addr) => listen = Some(addr.to_owned()),
                None => return Err(format!("unexpected argument: {arg}")),
            },
        }
    }
    let addr = listen
        .or(env.filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    Ok(Command::Serve(addr))
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match parse_args(
        std::env::args().skip(1),
        std::env::var("UPSTREAM_LISTEN").ok(),
    ) {
        Ok(Command::Serve(addr)) => addr,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("upstream-example: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("upstream-example: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(local) => println!("listening on http://{local}"),
        Err(_) => println!("listening on http://{addr}"),
    }
    // Tests read this line through a pipe, so it must not sit in a buffer.
    let _ = std::io::stdout().flush();

    let store: SharedStore = Arc::new(RwLock::new(Store::seeded()));
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(serve_connection(stream, store.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    eprintln!("upstream-example: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    ExitCode::SUCCESS
}

/// Serves HTTP/1.1 or HTTP/2 (detected from the preface) on one connection.
async fn serve_connection(stream: TcpStream, store: SharedStore) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let store = store.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&store, req).await) }
    });
    // Errors here are client-side problems (resets, malformed requests); there is
    // nothing useful to do beyond dropping the connection.
    let _ = Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Resolves on ctrl-c, or on SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling available: run until killed.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: Option<&str>) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()), env.map(str::to_owned))
    }

    #[test]
    fn listen_address_precedence() {
        let serve = |a: &str| Ok(Command::Serve(a.to_owned()));
        assert_eq!(parse(&[], None), serve(DEFAULT_LISTEN));
        assert_eq!(parse(&[], Some("0.0.0.0:1")), serve("0.0.0.0:1"));
        assert_eq!(
            parse(&["--listen", "127.0.0.1:0"], Some("0.0.0.0:1")),
            serve("127.0.0.1:0")
        );
        assert_eq!(parse(&["--listen=[::1]:8"], None), serve("[::1]:8"));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse(&["--listen"], None).is_err());
        assert!(parse(&["--port", "1"], None).is_err());
        assert_eq!(parse(&["--help"], None), Ok(Command::Help));
    }
}
