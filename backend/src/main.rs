use backend::config::Config;
use backend::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    backend::telemetry::init();
    let config = Config::from_env()?;
    tracing::info!(?config, "starting backend");
    let app = Application::build(config).await?;
    app.run_until_stopped(stop_signal()).await
}

/// Ctrl-C or SIGTERM (what `kill`, the run script and container engines send).
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
