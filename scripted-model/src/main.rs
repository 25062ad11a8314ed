//! `scripted-model --script FILE [--addr 127.0.0.1:0] [--print-config]`
//!
//! Serves the script and prints, on its first line of stdout, the base URL
//! (`http://127.0.0.1:PORT/v1`) so that a caller can wait for it.

use std::io::Write;

use anyhow::Context;
use scripted_model::{Script, ScriptedModel};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut script_path = None;
    let mut addr = "127.0.0.1:0".to_owned();
    let mut print_config = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--script" => script_path = args.next(),
            "--addr" => addr = args.next().context("--addr needs a value")?,
            "--print-config" => print_config = true,
            other => anyhow::bail!(
                "unknown argument {other}; usage: scripted-model --script FILE [--addr HOST:PORT] [--print-config]"
            ),
        }
    }
    let path = script_path.context("usage: scripted-model --script FILE [--addr HOST:PORT]")?;
    let script = Script::from_file(path.as_ref())?;
    let model = ScriptedModel::start(script, &addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", model.base_url())?;
    if print_config {
        write!(out, "{}", model.codex_config())?;
    }
    out.flush()?;
    drop(out);
    model.wait().await;
    Ok(())
}
