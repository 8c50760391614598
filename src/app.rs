//! Wiring and shutdown order: open the store, build the providers, bind, serve the
//! API and run the workers until told to stop; then stop accepting, drain the HTTP
//! requests in progress, let in-flight sends finish within the grace period, and
//! write their outcomes; last, let the webhook posts in flight end and settle them.
//! Anything abandoned comes back through lease expiry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::circuit::Circuits;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::provider::Registry;
use crate::queue::Queue;
use crate::webhook::Poster;
use crate::worker::Pool;

/// What one Herald process runs. Several processes with different roles can share
/// one server store (PostgreSQL or Redis): API processes accept and report, worker
/// processes deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API and the workers (`herald serve`); workers only if `worker.enabled`.
    All,
    /// Only the HTTP API (`herald api`).
    Api,
    /// Only the workers, no HTTP listener (`herald worker`).
    Worker,
}

/// A started Herald: its address, and the handle to stop it.
pub struct Running {
    /// Where the API listens; `None` for a worker-only process.
    pub addr: Option<SocketAddr>,
    circuits: Circuits,
    ingest_metrics: crate::ingest::Metrics,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://ADDR`, for clients and tests; `None` for a worker-only process.
    pub fn url(&self) -> Option<String> {
        self.addr.map(|addr| format!("http://{addr}"))
    }

    /// The providers' circuit breakers of this process's workers (all closed in
    /// a process without workers).
    pub fn circuits(&self) -> &Circuits {
        &self.circuits
    }

    /// What the `[[ingest]]` sources have taken so far.
    pub fn ingest_metrics(&self) -> &crate::ingest::Metrics {
        &self.ingest_metrics
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
    start_as(config, Role::All).await
}

/// Starts what `role` says in the background.
pub async fn start_as(config: Config, role: Role) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let url_days =
        crate::queue::prune::url_retention_days(&config.store).context("invalid store URL")?;
    config
        .audit
        .validate(config.retention.effective_days(url_days))
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let queue = Queue::open(&config.store)
        .await
        .with_context(|| format!("opening the store `{}`", config.store))?;
    let registry = Registry::build(
        &config.providers,
        &config.defaults,
        &config.failover,
        config.send_timeout(),
    )
    .context("invalid provider configuration")?;
    let circuits = Circuits::for_registry(&registry, &config.circuit);
    let listener = match role {
        Role::Worker => None,
        Role::All | Role::Api => Some({
            config.check_listen().map_err(anyhow::Error::msg)?;
            tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| {
                    format!(
                        "binding {}: if another server holds it, choose another address \
                         with `herald serve --listen` (or `listen` in the config)",
                        config.listen
                    )
                })?
        }),
    };
    let addr = listener
        .as_ref()
        .map(|l| l.local_addr().context("reading the bound address"))
        .transpose()?;

    if listener.is_some() {
        // Before the first request rather than during it.
        let phone = config.recipients.rules().phone;
        tokio::task::spawn_blocking(move || crate::recipient::prepare(&phone))
            .await
            .context("preparing the numbering plans")?;
    }
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new(
        registry
            .routes()
            .map(|r| (r.name.as_str(), r.channels.as_slice())),
    );
    let state = AppState::new(
        queue.clone(),
        registry.clone(),
        &config,
        metrics.clone(),
        shutdown.clone(),
    );
    // Ingest feeds intake, as the API does: not in a worker-only process.
    let ingest = match role {
        Role::Worker => None,
        Role::All | Role::Api => Some(
            Ingest::start(&config.ingest, &state.intake, &config.providers, &shutdown)
                .context("invalid ingest configuration")?,
        ),
    };
    // Receipts and replies pushed on providers' own connections (SMPP binds).
    let pushing = api::Pushing::start(&state);
    let router = api::router(state, config.limits.max_body_bytes);
    let workers = match role {
        Role::All => config.worker.enabled,
        Role::Api => false,
        Role::Worker => true,
    };
    let ingest_metrics = ingest.as_ref().map(Ingest::metrics).unwrap_or_default();
    // The circuits are those of this process's workers: a process without
    // workers has none worth showing (they would all read closed).
    if workers {
        metrics.add_section(Arc::new(circuits.clone()));
    }
    metrics.add_section(Arc::new(ingest_metrics.clone()));
    // One posting loop per process, whatever its role: processes share the
    // outbox by leases.
    let poster = Poster::new(
        queue.clone(),
        &config.webhooks,
        &config.webhook,
        metrics.clone(),
    )
    .context("starting the webhooks' posting loop")?;
    // Every process prunes, whatever its role: each step is its own transaction.
    crate::queue::prune::spawn_pruner(
        queue.clone(),
        config.retention.age(url_days),
        config.audit.age(),
        shutdown.clone(),
    );
    let pool = workers.then(|| Pool::new(queue, registry, circuits.clone(), &config, metrics));
    let grace = Duration::from_millis(config.worker.shutdown_grace_ms);
    let http = listener.map(|listener| (listener, router));
    let task = tokio::spawn(run(
        http,
        ingest,
        pool,
        pushing,
        poster,
        grace,
        shutdown.clone(),
    ));
    match addr {
        Some(addr) => {
            tracing::info!(%addr, store = %config.store, workers, "herald listening on http://{addr}");
            if config.auth.tokens.is_empty() {
                tracing::info!(
                    "no API tokens configured ([auth] tokens): serving loopback only, and asking for no token"
                );
            }
        }
        None => tracing::info!(store = %config.store, "herald worker started"),
    }
    Ok(Running {
        addr,
        circuits,
        ingest_metrics,
        shutdown,
        task,
    })
}

async fn run(
    http: Option<(tokio::net::TcpListener, axum::Router)>,
    ingest: Option<Ingest>,
    pool: Option<Pool>,
    pushing: api::Pushing,
    poster: Poster,
    grace: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let workers = pool.map(|pool| tokio::spawn(pool.run(shutdown.clone())));
    // The poster stops with the rest; the events of the workers' last settles
    // wait in the outbox for the next start.
    let posting = tokio::spawn(poster.run(shutdown.clone()));
    if let Some((listener, router)) = http {
        serve_http(listener, router, grace, &shutdown).await?;
    } else {
        shutdown.cancelled().await;
    }
    shutdown.cancel();
    // Ingest stops taking items at the same signal; its last items are stored (or
    // left in their queue) before the workers go.
    if let Some(ingest) = ingest {
        ingest.stop().await;
    }
    if let Some(workers) = workers {
        workers.await.context("the worker pool panicked")?;
    }
    // After the workers: their last submits are answered on the binds it closes.
    pushing.stop().await;
    // Last: its posts in flight end within the webhook timeout, and are settled.
    posting
        .await
        .context("the webhooks' posting loop panicked")?;
    tracing::info!("herald stopped");
    Ok(())
}

/// Serves HTTP until `shutdown`, then lets requests in progress finish within `grace`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    grace: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.clone();
    let mut http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    let served = tokio::select! {
        served = &mut http => served,
        () = shutdown.cancelled() => match tokio::time::timeout(grace, &mut http).await {
            Ok(served) => served,
            Err(_) => {
                tracing::warn!("HTTP requests still open after the grace period; closing them");
                http.abort();
                Ok(Ok(()))
            }
        },
    };
    // The server only returns early on an error; stop the workers with it.
    shutdown.cancel();
    served
        .context("the HTTP server panicked")?
        .context("the HTTP server failed")
}

/// Runs `role` until SIGINT or SIGTERM, then shuts down in order.
pub async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let running = start_as(config, role).await?;
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
