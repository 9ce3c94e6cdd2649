//! Building and running the application: settings in, a bound listener and
//! a server out. Tests build it the same way on port 0.

use secrecy::ExposeSecret as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokengate::VerifyPolicy;
use tokio::net::TcpListener;

use crate::http;
use crate::http::routes::verify::IdentityHeaderNames;
use crate::http::server::{self, Limits};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIpResolver;
use crate::infra::clock::Clock;
use crate::infra::config::Settings;
use crate::infra::password::{HashError, Hasher};
use crate::service::keys::{self, KeyStoreError};
use crate::service::{Accounts, Denylist, Sessions};
use crate::store::{PoolLimits, Store, StoreError};
use tokengate::guard::{CsrfPolicy, Guard, RevocationFailure};

/// How often revocations and signing keys recorded in the database are
/// loaded into this process.
pub const REVOCATION_SYNC: Duration = Duration::from_secs(2);

/// Connections the metrics listener serves at once: a scraper or two, and
/// a flood there must not cost what one on the API port may.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// The shortest write stall a connection is allowed, whatever
/// `request_timeout` says: a busy network can pause a healthy client's
/// reads for a moment.
const MIN_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the application could not start, or stop cleanly: one line for the
/// operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Connecting, migrating, or the first revocation load failed.
    #[error("storage: {0}")]
    Storage(#[source] StoreError),
    /// The signing keys could not be loaded or created.
    #[error("keys: {0}")]
    Keys(#[from] KeyStoreError),
    /// `redis_url` cannot be used (malformed).
    #[error("redis_url: {0}")]
    Redis(#[source] tokengate::guard::RevocationError),
    /// The settings make no valid token verification policy.
    #[error("verify policy: {0}")]
    VerifyPolicy(#[source] tokengate::PolicyError),
    /// The password hashing settings were refused.
    #[error(transparent)]
    PasswordHashing(#[from] HashError),
    /// `forward_auth_header_prefix` makes no header name (the settings
    /// refuse such a prefix first).
    #[error("forward_auth_header_prefix: {0}")]
    ForwardAuthHeaders(#[source] axum::http::header::InvalidHeaderName),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr} for metrics: {source}")]
    BindMetrics {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The bound listener could not say its address.
    #[error("{0}")]
    LocalAddr(#[source] std::io::Error),
    /// The TLS certificate chain or key could not be loaded.
    #[error("TLS: cannot use {} / {}: {source}", .cert.display(), .key.display())]
    Tls {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A reload of the TLS files failed (the current ones stay in use).
    #[error("TLS reload: {0}")]
    TlsReload(#[source] std::io::Error),
    /// The database pool did not close within its time.
    #[error("database did not close in 10 s")]
    CloseTimeout,
}

/// The TLS configuration and where it is reloaded from.
#[derive(Clone)]
pub struct Tls {
    /// The live rustls configuration; reloading swaps it for new connections.
    pub config: axum_server::tls_rustls::RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// Reads the certificate chain and key again; on failure the current
    /// ones stay in use.
    pub async fn reload(&self) -> Result<(), StartupError> {
        let config = http1_tls_config(&self.cert, &self.key)
            .await
            .map_err(StartupError::TlsReload)?;
        self.config.reload_from_config(config);
        Ok(())
    }
}

/// The rustls configuration for a certificate chain and key, offering
/// only HTTP/1.1 in ALPN: the server speaks nothing else (see
/// [`crate::http::server`]).
async fn http1_tls_config(
    cert: &Path,
    key: &Path,
) -> std::io::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    let loaded = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
    let mut config = (*loaded.get_inner()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A built application, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    tls: Option<Tls>,
    metrics_listener: Option<TcpListener>,
    state: Arc<AppState>,
}

impl Application {
    /// Connects storage, applies migrations, loads (or creates) the keys,
    /// rebuilds the denylist from the database, and binds the listener.
    pub async fn build(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        if settings.metrics {
            crate::infra::metrics::init();
        }
        let store = Store::connect_with(
            settings.database_url.expose_secret(),
            PoolLimits {
                max_connections: settings.database_max_connections,
                acquire_timeout: settings.database_acquire_timeout,
            },
        )
        .await
        .map_err(StartupError::Storage)?;
        let now = clock.now();
        let (keys, refresh_key, notes) =
            keys::KeyManager::start(&settings, &store, now.as_secs()).await?;
        for note in &notes {
            tracing::info!(note = %note, "key store");
        }
        let policy = VerifyPolicy::builder()
            .issuer(settings.issuer.clone())
            .audience(settings.audience.clone())
            .typ("at+jwt")
            .leeway(settings.leeway)
            .require_claims(["sub", "sid", "jti"])
            .build()
            .map_err(StartupError::VerifyPolicy)?;
        let hasher = Hasher::with_niceness(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            settings.password_hash_concurrency,
            settings.password_hash_niceness,
        )?;
        let listener =
            TcpListener::bind(settings.addr)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.addr,
                    source,
                })?;
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(Tls {
                config: http1_tls_config(cert, key)
                    .await
                    .map(axum_server::tls_rustls::RustlsConfig::from_config)
                    .map_err(|source| StartupError::Tls {
                        cert: cert.clone(),
                        key: key.clone(),
                        source,
                    })?,
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let metrics_listener = match (settings.metrics, settings.metrics_addr) {
            (true, Some(addr)) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::BindMetrics { addr, source })?,
            ),
            _ => None,
        };
        // One Redis connection for the denylist, the login limits and the
        // request budget; it need not answer yet (each falls back or fails
        // closed as documented, and reconnects by itself).
        let redis = redis_connection(&settings).map_err(StartupError::Redis)?;
        let throttle = crate::infra::ratelimit::login_throttle(&settings, redis.clone());
        let denylist = Denylist::from_settings(&settings, redis.clone());
        if settings.revocation_fail_open {
            tracing::warn!(
                "revocation_fail_open is on: while the denylist cannot be read, logged-out access tokens are accepted until they expire"
            );
        }
        if settings.cookie_insecure_dev {
            tracing::warn!(
                "cookie_insecure_dev is on: cookie-mode cookies are sent without Secure and without the __Host-/__Secure- prefixes; for local development over http only"
            );
        }
        let keys = Arc::new(keys);
        let cookies = crate::http::cookies::BrowserCookies::of(&settings);
        let guard = {
            let clock = clock.clone();
            let builder = Guard::builder(keys.clone(), policy);
            // Cookie mode: the access cookie after the Authorization header,
            // and the CSRF rule for unsafe requests it authenticates.
            let builder = if cookies.enabled() {
                builder
                    .cookie(cookies.access_name())
                    .cookie_same_site(match settings.cookie_same_site {
                        crate::infra::config::SameSite::Strict => {
                            tokengate::guard::SameSite::Strict
                        }
                        crate::infra::config::SameSite::Lax => tokengate::guard::SameSite::Lax,
                    })
                    .csrf(
                        CsrfPolicy::new(settings.cookie_origins()).cookie_name(cookies.csrf_name()),
                    )
            } else {
                builder
            };
            builder
                .revocations(denylist.reader())
                .on_revocation_failure(if settings.revocation_fail_open {
                    RevocationFailure::FailOpen
                } else {
                    RevocationFailure::FailClosed
                })
                .cache(if settings.verify_cache {
                    settings.verify_cache_size
                } else {
                    0
                })
                .realm("tokengate")
                .clock(Arc::new(move || clock.now()))
                .on_rejection(Arc::new(crate::infra::metrics::token_rejected))
                .build()
        };
        let shared_settings = Arc::new(settings.clone());
        let accounts = Accounts::new(
            store.clone(),
            hasher.clone(),
            clock.clone(),
            denylist.clone(),
            throttle.clone(),
            settings.ipv6_prefix_len,
        );
        let sessions = Sessions::new(
            store.clone(),
            hasher.clone(),
            clock.clone(),
            throttle.clone(),
            denylist.clone(),
            keys.clone(),
            refresh_key,
            shared_settings,
        );
        let identity_headers = IdentityHeaderNames::new(&settings.forward_auth_header_prefix)
            .map_err(StartupError::ForwardAuthHeaders)?;
        let state = Arc::new(AppState {
            identity_headers,
            budget: crate::infra::ratelimit::request_budget(&settings, redis),
            client_ip: ClientIpResolver::new(
                settings.trusted_proxies.clone(),
                settings.client_ip_header,
            ),
            settings,
            store,
            keys,
            guard,
            hasher,
            clock,
            denylist,
            throttle,
            accounts,
            sessions,
        });
        state
            .sync_revocations(state.denylist.lookback(now.as_secs()))
            .await
            .map_err(StartupError::Storage)?;
        Ok(Application {
            listener,
            tls,
            metrics_listener,
            state,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr, StartupError> {
        self.listener.local_addr().map_err(StartupError::LocalAddr)
    }

    /// The metrics listener's address, when `metrics_addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The TLS configuration, when serving HTTPS.
    pub fn tls(&self) -> Option<Tls> {
        self.tls.clone()
    }

    /// The shared state (tests inspect storage through it).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish,
    /// then closes the database.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let store = self.state.store.clone();
        // Retention runs in the background, hourly, for as long as we serve.
        let pruner = tokio::spawn({
            let state = self.state.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tick.tick().await;
                    if let Err(e) = state.prune_audit().await {
                        tracing::error!(cause = %e, "audit retention failed");
                    }
                }
            }
        });
        // Revocations made elsewhere (the CLI, other instances) reach this
        // process's denylist within REVOCATION_SYNC.
        let syncer = tokio::spawn({
            let state = self.state.clone();
            async move {
                let mut tick = tokio::time::interval(REVOCATION_SYNC);
                let mut ticks: u64 = 0;
                loop {
                    tick.tick().await;
                    let now = state.clock.now().as_secs();
                    ticks += 1;
                    // Limiter state of clients gone quiet, once a minute.
                    if ticks.is_multiple_of(30) {
                        state.prune_limits(now);
                    }
                    // The whole window in which a revocation still matters,
                    // every time: `revoked_at` is the writer's clock, read
                    // before its transaction waited for locks, so a "since
                    // the last sync" cursor would miss a late commit or a
                    // lagging host. Re-adding an entry is idempotent.
                    if let Err(e) = state.sync_revocations(state.denylist.lookback(now)).await {
                        tracing::error!(cause = %e, "revocation sync failed");
                    }
                    // Rotations by the CLI or another instance, scheduled
                    // activations and retirements, automatic rotation.
                    if let Err(e) = state.keys.refresh(&state.store, now).await {
                        tracing::error!(cause = %e, "key refresh failed");
                    }
                }
            }
        });
        // With Redis: a rotation announced by another instance (or the
        // CLI) is loaded at once; the sync above stays the fallback.
        let listener = self.state.keys.announcer().cloned().map(|announcer| {
            let state = self.state.clone();
            tokio::spawn(announcer.listen(move |_keys_changed| {
                let state = state.clone();
                async move {
                    let now = state.clock.now().as_secs();
                    if let Err(e) = state.keys.refresh(&state.store, now).await {
                        tracing::error!(cause = %e, "key refresh on announcement failed");
                    }
                }
            }))
        });
        let limits = Limits {
            header_read_timeout: self.state.settings.header_read_timeout,
            max_connections: self.state.settings.max_connections,
            // A response the client will not take within the time a request
            // may take is abandoned: no honest client needs longer to start
            // reading a response than the server may take to produce one.
            // Floored, as the request timeout itself is, so a zero setting
            // cannot cut off a client whose network merely paused.
            write_stall_timeout: self
                .state
                .settings
                .request_timeout
                .max(MIN_WRITE_STALL_TIMEOUT),
        };
        let metrics_server = self.metrics_listener.map(|listener| {
            let app = http::metrics_router(self.state.clone());
            let limits = Limits {
                max_connections: METRICS_MAX_CONNECTIONS,
                ..limits
            };
            // Stopped with the rest below: a scrape needs no draining.
            tokio::spawn(server::serve(
                listener,
                app,
                None,
                limits,
                std::future::pending(),
            ))
        });
        let reloader = self
            .tls
            .clone()
            .map(|tls| tokio::spawn(reload_on_sighup(tls)));
        let app = http::router(self.state);
        server::serve(
            self.listener,
            app,
            self.tls.map(|tls| tls.config),
            limits,
            shutdown,
        )
        .await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        pruner.abort();
        if let Some(listener) = listener {
            listener.abort();
        }
        syncer.abort();
        if let Some(server) = metrics_server {
            server.abort();
        }
        // Give the pool a moment to return connections, then close cleanly.
        tokio::time::timeout(Duration::from_secs(10), store.close())
            .await
            .map_err(|_| StartupError::CloseTimeout)?;
        Ok(())
    }
}

/// Reloads the certificate and key on each SIGHUP, for certificate renewal
/// without a restart.
async fn reload_on_sighup(tls: Tls) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match tls.reload().await {
                Ok(()) => tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(cause = %e, "TLS reload failed; the previous certificate stays in use")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}

/// The Redis connection of a deployment with `redis_url` (made lazily: Redis
/// need not answer yet); `None` without one. Start-up and the `user` CLI
/// share it.
pub fn redis_connection(
    settings: &Settings,
) -> Result<Option<redis::aio::ConnectionManager>, tokengate::guard::RevocationError> {
    settings
        .redis_url
        .as_ref()
        .map(|url| tokengate::guard::redis_connect_lazy(url.expose_secret()))
        .transpose()
}
