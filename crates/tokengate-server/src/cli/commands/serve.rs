//! `tokengate serve` and `tokengate migrate`.

use secrecy::ExposeSecret as _;
use std::io::IsTerminal as _;
use std::sync::Arc;

use crate::cli::{DataArgs, Failure, ServeArgs};
use crate::infra::clock::SystemClock;
use crate::infra::config::Overrides;
use crate::startup::{Application, shutdown_signal};
use crate::store::Store;

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the async runtime: {e}")))
}

/// Runs the service until SIGINT/SIGTERM.
pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    let settings = super::load_settings(
        &args.data,
        Overrides {
            addr: args.addr.clone(),
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            ..Overrides::default()
        },
    )?;
    if args.print_config {
        print!("{}", settings.render());
        return Ok(());
    }
    crate::infra::telemetry::init(
        settings.log_format,
        &settings.log_level,
        std::io::stdout,
        std::io::stdout().is_terminal(),
    );
    runtime()?.block_on(async move {
        let public_url = settings.public_url.clone();
        let scheme = if settings.tls_cert.is_some() { "https" } else { "http" };
        let storage = if settings.is_postgres() { "PostgreSQL" } else { "SQLite" };
        let app = Application::build(settings, Arc::new(SystemClock))
            .await
            .map_err(|e| Failure::Input(e.to_string()))?;
        let addr = app.local_addr().map_err(|e| Failure::Input(e.to_string()))?;
        tracing::info!(%addr, storage, "tokengate listening");
        eprintln!(
            "tokengate is listening on {scheme}://{addr} ({storage}).\nRegister the first user:\n  curl -s {public_url}/auth/register -H 'content-type: application/json' -d '{{\"email\":\"you@example.com\",\"password\":\"a long passphrase of your own\"}}'"
        );
        app.run_until(shutdown_signal())
            .await
            .map_err(|e| Failure::Input(e.to_string()))?;
        tracing::info!("tokengate stopped cleanly");
        Ok(())
    })
}

/// Applies pending migrations and exits.
pub fn migrate(args: DataArgs) -> Result<(), Failure> {
    let settings = super::load_settings(&args, Overrides::default())?;
    super::block_on(async move {
        let store = Store::connect(settings.database_url.expose_secret())
            .await
            .map_err(|e| Failure::Input(format!("storage: {e}")))?;
        store.close().await;
        println!("migrations applied");
        Ok(())
    })?
}
