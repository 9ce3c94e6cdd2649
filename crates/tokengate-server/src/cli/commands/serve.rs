//! `tokengate serve` and `tokengate migrate`.

use secrecy::ExposeSecret as _;
use std::io::IsTerminal as _;
use std::sync::Arc;

use crate::cli::output::stdout_line;
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
        return crate::cli::output::text(&settings.render());
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
        // The admin commands must find this server's data: name the data
        // directory unless it is the default one they look in anyway.
        let data_dir_flag = if settings.data_dir == std::path::Path::new("./tokengate-data") {
            String::new()
        } else {
            format!(" --data-dir {}", settings.data_dir.display())
        };
        let app = Application::build(settings, Arc::new(SystemClock))
            .await
            .map_err(|e| Failure::Input(e.to_string()))?;
        let addr = app.local_addr().map_err(|e| Failure::Input(e.to_string()))?;
        tracing::info!(%addr, storage, "tokengate listening");
        eprintln!(
            "tokengate is listening on {scheme}://{addr} ({storage}).\n\
             Register the first user:\n  \
             curl -s {public_url}/auth/register -H 'content-type: application/json' -d '{{\"email\":\"you@example.com\",\"password\":\"a long passphrase of your own\"}}'\n\
             Create an admin (the /admin endpoints need the role), or give an existing account the role:\n  \
             tokengate user add --email admin@example.com --role admin{data_dir_flag}\n  \
             tokengate user set-roles --email you@example.com --roles user,admin{data_dir_flag}"
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
        stdout_line!("migrations applied")?;
        Ok(())
    })?
}
