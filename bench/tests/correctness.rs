//! CI's size of the benchmark suite: every scenario on both paths, checked
//! for correctness only (no gaps, no duplicates, every subscriber reads its
//! run to the end; S5's clones check out git's commit; S6's delivered
//! events are all rows in Postgres; S7's patches are git's, byte for byte,
//! and its commits git's trees). No figure is asserted: timing belongs to
//! the full run.
//!
//! The runner and backend binaries are those of this cargo profile (built by
//! `cargo nextest run --workspace`, or `cargo build -p runner -p backend`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bench::scenarios::{run_all, Sizes};
use bench::stack::{Binaries, StackOptions};

fn binaries() -> Binaries {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_bench-codex"))
        .parent()
        .unwrap()
        .to_path_buf();
    let binary = |var: &str, name: &str| {
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join(name));
        assert!(
            path.is_file(),
            "{} is missing: build it with `cargo build -p {name}`",
            path.display()
        );
        path
    };
    Binaries {
        runner: binary("BENCH_RUNNER_BIN", "runner"),
        backend: binary("BENCH_BACKEND_BIN", "backend"),
        fake_codex: PathBuf::from(env!("CARGO_BIN_EXE_bench-codex")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_of_every_scenario_reads_every_event_once() {
    let options = StackOptions {
        database_url: std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()),
        ..StackOptions::default()
    };

    let measurements = run_all(&binaries(), options, &Sizes::small())
        .await
        .unwrap();

    let wrong: Vec<_> = measurements.iter().filter(|m| !m.correct()).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    let paths: Vec<(&str, &str)> = measurements
        .iter()
        .map(|m| (m.scenario.split(' ').next().unwrap(), m.path))
        .collect();
    assert_eq!(
        paths,
        [
            ("S3", "runner alone"),
            ("S3", "whole stack"),
            ("S4", "runner alone"),
            ("S4", "whole stack"),
            ("S4", "fake CLI alone"),
            ("S1", "runner alone"),
            ("S1", "whole stack"),
            ("S2", "runner alone"),
            ("S2", "whole stack"),
            ("S2", "runner alone"),
            ("S2", "whole stack"),
            ("S5", "whole stack"),
            ("S5", "git clone"),
            ("S5", "whole stack"),
            ("S5", "git clone"),
            ("S6", "runner alone"),
            ("S6", "whole stack"),
            ("S7", "whole stack"),
            ("S7", "git diff"),
            ("S7", "git add -A, write-tree, diff-tree (own index)"),
            ("S7", "whole stack"),
            ("S7", "git diff"),
            ("S7", "git add -A, write-tree, diff-tree (own index)"),
            ("S7", "whole stack"),
            ("S7", "idle server"),
            ("S7", "whole stack"),
            ("S7", "git add -A && git commit"),
        ]
    );
}
