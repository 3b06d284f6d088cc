//! `sse-gateway`: parses the command line, binds, and calls [`sse_gateway::run`].

use std::process::ExitCode;

use clap::Parser;
use sse_gateway::broker::StartError;
use sse_gateway::config::{self, Cli, Command, Config, LogFormat, ServeArgs, EXIT_CONFIG};
use sse_gateway::telemetry::{self, TraceSettings};
use sse_gateway::{auth, shutdown};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let args = match cli.command {
        Some(Command::MintToken(args)) => {
            return match auth::mint::mint_token(&args.request()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("sse-gateway: {}", config::mint_error(&error));
                    ExitCode::from(EXIT_CONFIG as u8)
                }
            };
        }
        Some(Command::Serve(args)) => *args,
        None => cli.serve,
    };
    serve(args)
}

fn serve(args: ServeArgs) -> ExitCode {
    // Each stream is a socket: take every descriptor the hard limit allows.
    let open_files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let config = match Config::from_args(args, open_files) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sse-gateway: {error}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let traces = match init_logging(config.log_format, config.traces.as_ref()) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("sse-gateway: invalid configuration: --otlp-endpoint: {error}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    // One TLS crypto provider for the whole process (the listener names it; the Redis client
    // takes the process default): ring, so no other provider a dependency might enable can
    // leave rustls without a default.
    let _ = std::sync::Arc::unwrap_or_clone(sse_gateway::server::tls::provider()).install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sse-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Spans are sent by a task of the runtime; at exit, what is queued is sent (bounded).
    let (stop_exporting, stopped) = tokio::sync::watch::channel(false);
    let exporting = traces.map(|pipeline| {
        let task = runtime.spawn(pipeline.exporting.run(stopped));
        (pipeline.provider, task)
    });
    let backend = config.settings.broker.backend.clone();
    let served = runtime.block_on(serve_until_signal(config, open_files));
    if let Some((_provider, task)) = exporting {
        let _ = stop_exporting.send(true);
        let _ = runtime.block_on(tokio::time::timeout(
            std::time::Duration::from_secs(3),
            task,
        ));
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // TLS with Redis failing at start is a setting to fix, not an outage to wait out.
            if let Some(StartError::Tls(failure)) = error.downcast_ref::<StartError>() {
                let error = config::redis_tls_error(failure, &backend);
                tracing::error!(%error, "gateway stopped");
                eprintln!("sse-gateway: {error}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
            tracing::error!(error = format!("{error:#}"), "gateway stopped");
            eprintln!("sse-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_signal(config: Config, open_files: u64) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = sse_gateway::server::bind(config.listen)
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let metrics_listener = sse_gateway::server::bind(config.metrics_listen).with_context(|| {
        format!(
            "cannot listen on {} (--metrics-listen)",
            config.metrics_listen
        )
    })?;
    tracing::info!(
        addr = %listener.local_addr()?,
        metrics_addr = %metrics_listener.local_addr()?,
        broker = config.settings.broker.backend.name(),
        max_connections = config.settings.streams.max_connections,
        open_files,
        demo = config.settings.routes.demo,
        "listening"
    );
    if config.settings.routes.demo {
        let scheme = if config.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(url = %format!("{scheme}://{}/", listener.local_addr()?), "demo dashboard");
    }
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        shutdown::termination_signal().await;
        trigger.trigger();
    });
    sse_gateway::run(listener, metrics_listener, config.settings, shutdown).await
}

/// Logs to stdout (colours only on a terminal), and traces when `--otlp-endpoint` is set
/// (their spans never reach the log).
fn init_logging(
    format: LogFormat,
    traces: Option<&TraceSettings>,
) -> Result<Option<telemetry::Pipeline>, String> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            format!("{}=off", telemetry::TARGET)
                .parse()
                .map_err(|e| format!("{e}"))?,
        );
    let log = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let log = match format {
        LogFormat::Json => log.json().flatten_event(false).with_filter(filter).boxed(),
        LogFormat::Text => log.with_filter(filter).boxed(),
    };
    let pipeline = traces.map(telemetry::install).transpose()?;
    let spans = pipeline
        .as_ref()
        .map(|pipeline| telemetry::layer(&pipeline.provider));
    tracing_subscriber::registry().with(log).with(spans).init();
    Ok(pipeline)
}

/// `--help` and `--version` print and succeed; any other command-line error is one line
/// naming the option, and exit status 64.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let text = error.to_string();
    let line = text.lines().next().unwrap_or("invalid arguments");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    eprintln!("sse-gateway: invalid configuration: {line}");
    ExitCode::from(EXIT_CONFIG as u8)
}
