//! Wiring and shutdown order: open the store, build the providers, bind, serve the
//! API and run the workers until told to stop; then stop accepting, drain the HTTP
//! requests in progress, let in-flight sends finish within the grace period, and
//! write their outcomes. Anything abandoned comes back through lease expiry.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::intake::Intake;
use crate::provider::Registry;
use crate::queue::Queue;
use crate::worker::Pool;

/// A started Herald: its address, and the handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://ADDR`, for clients and tests.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks Herald to stop; [`Running::wait`] returns once it has.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }
}

/// Starts the API and the workers in the background.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let queue = Queue::open(&config.store)
        .await
        .with_context(|| format!("opening the store `{}`", config.store))?;
    let registry = Registry::build(&config.providers, &config.defaults, config.send_timeout())
        .context("invalid provider configuration")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;

    let state = AppState {
        intake: Intake::new(
            queue.clone(),
            registry.clone(),
            config.limits.max_recipients,
        ),
        queue: queue.clone(),
    };
    let router = api::router(state, config.limits.max_body_bytes);
    let pool = config
        .worker
        .enabled
        .then(|| Pool::new(queue, registry, &config));
    let grace = Duration::from_millis(config.worker.shutdown_grace_ms);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(listener, router, pool, grace, shutdown.clone()));
    tracing::info!(%addr, store = %config.store, workers = config.worker.enabled, "herald listening on http://{addr}");
    Ok(Running {
        addr,
        shutdown,
        task,
    })
}

async fn run(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    pool: Option<Pool>,
    grace: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let workers = pool.map(|pool| tokio::spawn(pool.run(shutdown.clone())));
    let stop = shutdown.clone();
    let mut http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });

    let served = tokio::select! {
        served = &mut http => Some(served),
        () = shutdown.cancelled() => None,
    };
    // Requests in progress get the same grace as sends; then they are cut off.
    let served = match served {
        Some(served) => served,
        None => match tokio::time::timeout(grace, &mut http).await {
            Ok(served) => served,
            Err(_) => {
                tracing::warn!("HTTP requests still open after the grace period; closing them");
                http.abort();
                Ok(Ok(()))
            }
        },
    };
    shutdown.cancel();
    if let Some(workers) = workers {
        workers.await.context("the worker pool panicked")?;
    }
    served
        .context("the HTTP server panicked")?
        .context("the HTTP server failed")?;
    tracing::info!("herald stopped");
    Ok(())
}

/// Runs until SIGINT or SIGTERM, then shuts down in order.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutdown requested: no longer accepting, finishing in-flight sends");
        shutdown.cancel();
    });
    running.wait().await
}

async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
