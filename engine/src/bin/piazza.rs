//! `piazza`: the reference server. Serves the HTTP API, the browser client
//! and the media engine; configuration from `--config FILE`, `PIAZZA_*`
//! environment variables and flags (see `piazza --help` and docs/api.md).

use std::io::IsTerminal;

use clap::Parser;
use piazza::server::{Args, Server, ServerConfig};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let filter = EnvFilter::try_from_env("PIAZZA_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .init();

    let args = Args::parse();
    let config = match ServerConfig::load(&args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("piazza-http")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServerConfig) -> Result<(), piazza::server::ServerError> {
    let public_url = config.public_url.clone();
    let key_required = config.api_key.is_some();
    // Listen for the signals before saying we run: a SIGTERM right after
    // startup must shut down gracefully, not kill the process.
    let shutdown = shutdown_signal();
    let server = Server::bind(config).await?;
    let addr = server.local_addr();
    let open = public_url.unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            format!("http://127.0.0.1:{}", addr.port())
        } else {
            format!("http://{addr}")
        }
    });
    tracing::info!(
        http = %addr,
        media = ?server.media_addrs(),
        api_key_required = key_required,
        node = server.node_id().as_deref().unwrap_or("single"),
        "piazza is running: open {open}/ in a browser to create a room"
    );
    drain_on_sigusr1(server.drainer());
    server.run(shutdown).await
}

/// SIGUSR1: drain (no new rooms; stop once the running rooms empty or the
/// drain timeout passes).
#[cfg(unix)]
fn drain_on_sigusr1(drainer: piazza::server::Drainer) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined1()) {
        Ok(mut s) => {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    tracing::info!("SIGUSR1: draining");
                    drainer.drain();
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGUSR1 (drain): {e}"),
    }
}

#[cfg(not(unix))]
fn drain_on_sigusr1(_drainer: piazza::server::Drainer) {}

/// Ctrl-C or SIGTERM. The handlers are installed when this is called (not
/// when the future is first polled).
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!("cannot listen for a shutdown signal: {e}");
                    std::future::pending::<()>().await
                }
            }
        };
        tokio::select! {
            _ = wait(int) => {},
            _ = wait(term) => {},
        }
        tracing::info!("shutting down");
    }
}

/// Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}
