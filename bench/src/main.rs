//! `bench all [--small] [--only S1,...] [--s5-repo PATH]... [--s7-files N] [--out FILE]`:
//! see docs/BENCHMARKS.md.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    bench::run_main(std::env::args().skip(1).collect()).await
}
