//! `sse-load`: one bounded load run against an SSE server on loopback; prints a text
//! report and optionally writes it as JSON. See `loadtest/README.md`.

use clap::Parser;
use sse_loadtest::run::{run, RunArgs};

#[derive(Parser)]
#[command(
    name = "sse-load",
    version,
    about = "Bounded SSE load generator (loopback only)"
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    /// Worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
    /// Print only the JSON report.
    #[arg(long)]
    quiet: bool,
    /// Exit with status 1 unless every connection was established and every expected
    /// event arrived once, in order, and every publish succeeded (smoke tests).
    #[arg(long)]
    assert_clean: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Tens of thousands of sockets: take the whole hard limit.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.enable_all().build()?;
    let json_path = cli.run.json.clone();
    let report = runtime.block_on(run(cli.run))?;
    if let Some(path) = json_path {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    if cli.quiet {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", sse_loadtest::report::text(&report));
    }
    // Runtime shutdown must not wait on sockets the run already abandoned.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if cli.assert_clean {
        let problems = sse_loadtest::report::problems(&report);
        if !problems.is_empty() {
            eprintln!("sse-load: not clean: {}", problems.join("; "));
            std::process::exit(1);
        }
    }
    Ok(())
}
