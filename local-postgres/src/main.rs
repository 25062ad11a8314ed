//! `local-postgres start DATA_DIR [PORT [DATABASE]]` creates the cluster if
//! needed, starts it (or finds it running), creates DATABASE if missing,
//! prints its URL and leaves the server running. The URL carries the
//! password (kept in DATA_DIR): capture it, never log it.
//! `local-postgres stop DATA_DIR` stops it. Logs go to stderr (warnings
//! only unless RUST_LOG says more), stdout is the URL alone.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    // A warning says what changed in the folder (a password given to one
    // made before passwords).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["start", dir, rest @ ..] => {
            let port = rest
                .first()
                .map(|p| p.parse::<u16>().context("PORT must be a number"))
                .transpose()?;
            let pg = local_postgres::LocalPostgres::start(dir.as_ref(), port)?;
            let database = rest.get(1).copied().unwrap_or("postgres");
            pg.ensure_database(database)?;
            let url = pg.url(database);
            pg.detach();
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, format!("{url}\n").as_bytes())?;
            Ok(())
        }
        ["stop", dir] => Ok(local_postgres::stop_cluster(dir.as_ref())?),
        _ => anyhow::bail!(
            "usage: local-postgres start DATA_DIR [PORT [DATABASE]] | local-postgres stop DATA_DIR"
        ),
    }
}
