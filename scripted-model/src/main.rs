//! `scripted-model --script FILE [--addr 127.0.0.1:0] [--pace FACTOR] [--print-config] [--write-config FILE]`
//!
//! `--pace` multiplies the script's pauses (`wait_ms`): `0` runs the demo
//! script at full speed in tests, `1` (the default) as written.
//! Serves the script and prints, on its first line of stdout, the base URL
//! (`http://127.0.0.1:PORT/v1`) so that a caller can wait for it. With
//! `--write-config FILE` it writes a Codex `config.toml` pointing at itself
//! (atomically, once it is listening), so a caller can wait for the file.

use std::io::Write;

use anyhow::Context;
use scripted_model::{Script, ScriptedModel};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut script_path = None;
    let mut addr = "127.0.0.1:0".to_owned();
    let mut print_config = false;
    let mut write_config: Option<String> = None;
    let mut pace = 1.0f64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--script" => script_path = args.next(),
            "--addr" => addr = args.next().context("--addr needs a value")?,
            "--print-config" => print_config = true,
            "--pace" => {
                let raw = args.next().context("--pace needs a number")?;
                pace = raw
                    .parse()
                    .ok()
                    .filter(|p: &f64| p.is_finite() && *p >= 0.0)
                    .with_context(|| format!("--pace must be a number from 0, got {raw:?}"))?;
            }
            "--write-config" => write_config = Some(args.next().context("--write-config needs a file")?),
            other => anyhow::bail!(
                "unknown argument {other}; usage: scripted-model --script FILE [--addr HOST:PORT] [--pace FACTOR] [--print-config] [--write-config FILE]"
            ),
        }
    }
    let path = script_path.context("usage: scripted-model --script FILE [--addr HOST:PORT]")?;
    let script = Script::from_file(path.as_ref())?.paced(pace);
    let model = ScriptedModel::start(script, &addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    if let Some(path) = write_config {
        let partial = format!("{path}.partial");
        std::fs::write(&partial, model.codex_config())
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("cannot write {path}"))?;
    }
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
