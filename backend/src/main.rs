//! The public API of repo-runner: sessions, runs and their event streams.
//! Built in a later issue; this binary only says so.

fn main() {
    eprintln!("backend: not built yet (see the backend issue)");
    std::process::exit(2);
}
