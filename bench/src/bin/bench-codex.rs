//! The fake Codex CLI of the benchmarks; see `bench::fake`.

fn main() -> anyhow::Result<()> {
    bench::fake::main()
}
