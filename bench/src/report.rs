//! The results as Markdown: one row per scenario and path, with the
//! processes' CPU and memory, then the whole stack as a ratio of the runner
//! alone (S5: of `git clone`; S7: of `git diff`, `git commit` and the idle
//! server) for each headline figure.

use std::fmt::Write;

use crate::scenarios::Measurement;

/// What the whole stack is compared with, in the ratio table.
const BASELINES: [&str; 6] = [
    "runner alone",
    "git clone",
    crate::scenarios::GIT_DIFF,
    crate::scenarios::GIT_SNAPSHOT,
    crate::scenarios::GIT_COMMIT,
    crate::scenarios::IDLE,
];

/// The processes whose usage is shown, in column order.
const PROCESSES: [&str; 4] = ["runner", "backend", "postgres", "client"];

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn figures(m: &Measurement) -> String {
    m.figures
        .iter()
        .map(|(name, value, unit)| format!("{name} {} {unit}", number(*value)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn usage(m: &Measurement, name: &str, cell: impl Fn(&crate::procstat::Usage) -> String) -> String {
    m.usage
        .iter()
        .find(|u| u.name == name)
        .map(cell)
        .unwrap_or_else(|| "–".into())
}

/// The Markdown tables of `measurements`.
pub fn markdown(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | path | result | subscribers complete | gaps / dups | CPU s: runner / backend / postgres / client | peak memory MB (RSS; Postgres: PSS of all its processes): runner / backend / postgres |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for m in measurements {
        let cpu: Vec<String> = PROCESSES
            .iter()
            .map(|p| usage(m, p, |u| format!("{:.2}", u.cpu_secs)))
            .collect();
        let rss: Vec<String> = PROCESSES[..3]
            .iter()
            .map(|p| usage(m, p, |u| format!("{:.0}", u.peak_rss as f64 / 1e6)))
            .collect();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}/{} | {} / {} | {} | {} |",
            m.scenario,
            m.path,
            figures(m),
            m.complete,
            m.subscribers,
            m.gaps,
            m.duplicates,
            cpu.join(" / "),
            rss.join(" / "),
        );
    }
    out.push_str(
        "\nThe whole stack as a multiple of its baseline in the same invocation: the runner \
         alone, or for S5 `git clone` of the same URL, for S7 git on an identical copy (or, \
         for the polling during a patch, the same polling of the idle server):\n\n",
    );
    out.push_str(
        "| scenario | figure | baseline | baseline's figure | whole stack | stack ÷ baseline |\n\
         |---|---|---|---|---|---|\n",
    );
    let pairs = measurements
        .iter()
        .filter(|m| m.path == "whole stack")
        .flat_map(|stack| {
            measurements
                .iter()
                .filter(|m| BASELINES.contains(&m.path) && m.scenario == stack.scenario)
                .map(move |baseline| (stack, baseline))
        });
    for (stack, baseline) in pairs {
        for (name, value, unit) in &stack.figures {
            let Some(alone) = baseline.figure(name) else {
                continue;
            };
            let ratio = if alone > 0.0 {
                format!("{:.2}×", value / alone)
            } else {
                "–".into()
            };
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| {} | {name} | {} | {} {unit} | {} {unit} | {ratio} |",
                stack.scenario,
                baseline.path,
                number(alone),
                number(*value),
            );
        }
    }
    out
}
