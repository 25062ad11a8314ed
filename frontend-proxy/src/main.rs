//! The dashboard and the reverse proxy in front of the backend.
//! Built in a later issue; this binary only says so.

fn main() {
    eprintln!("frontend-proxy: not built yet (see the frontend-proxy issue)");
    std::process::exit(2);
}
