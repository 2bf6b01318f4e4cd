//! The `herald` binary: parse the command line, set up logging, and hand over
//! to the library.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use herald::config::{Cli, Command, KeyCommand, LogFormat};
use herald::serve::Herald;
use herald::telemetry::Exporter;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log lines to stderr, and spans to an OTLP collector when one is named.
fn init_tracing(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<Option<Exporter>, herald::telemetry::TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,h2=warn,hyper=warn")
    });
    let exporter = otlp_endpoint.map(Exporter::start).transpose()?;
    // RUST_LOG chooses log lines, not spans: Herald's own spans are
    // exported whatever the log level.
    let spans = exporter.as_ref().map(|exporter| {
        exporter
            .layer()
            .with_filter(Targets::new().with_target("herald", tracing::Level::INFO))
    });
    // Colour only for a person at a terminal: in a file, a pipe or a
    // journal, escape codes are noise that breaks grep.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Human => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines.json().with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(spans)
        .with(lines)
        .init();
    Ok(exporter)
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

/// The grpcurl command that lists the services with the first admin key:
/// plaintext, or over TLS trusting the serving certificate (self-signed, or
/// replace it with the CA that issued it) by a name it holds (`localhost`
/// for a loopback or unspecified address).
fn first_call(
    token: &str,
    tls_cert: Option<&std::path::Path>,
    addr: std::net::SocketAddr,
) -> String {
    match tls_cert {
        None => format!("grpcurl -H 'authorization: Bearer {token}' -plaintext {addr} list"),
        Some(cert) => {
            let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
                format!("localhost:{}", addr.port())
            } else {
                addr.to_string()
            };
            format!(
                "grpcurl -H 'authorization: Bearer {token}' -cacert {} {host} list",
                cert.display()
            )
        }
    }
}

/// Any failure of a subcommand; printed with its causes.
type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(config) => {
            let tls_cert = config.tls_cert.clone();
            let herald = Herald::start(*config).await?;
            if let Some(token) = &herald.generated_admin_token {
                // Written in one go and never fatal: a closed stdout (a pipe
                // whose reader left) must not take the server down.
                let message = format!(
                    "Created the first admin API key. It is shown only now; keep it:\n\n    {token}\n\n\
                     Use it as:  {}\n",
                    first_call(token, tls_cert.as_deref(), herald.grpc_addr()?)
                );
                let mut stdout = std::io::stdout().lock();
                let _ = stdout
                    .write_all(message.as_bytes())
                    .and_then(|()| stdout.flush());
            }
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone());
            Ok(herald.serve(shutdown).await?)
        }
        Command::Migrate(args) => Ok(herald::cli::migrate(&args).await?),
        Command::Key { command } => {
            let said = match command {
                KeyCommand::Create(args) => herald::cli::create_key(&args).await?,
                KeyCommand::List(args) => herald::cli::list_keys(&args).await?,
                KeyCommand::Revoke(args) => herald::cli::revoke_key(&args).await?,
            };
            println!("{}", said.trim_end());
            Ok(())
        }
        Command::Listen(args) => Ok(herald::listen::run(*args).await?),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "herald",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = match herald::config_file::parse() {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("herald: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Before the runtime: the trace exporter's HTTP client is a blocking
    // one, with a thread of its own.
    // And after the TLS provider: that client is built at once.
    herald::install_crypto_provider();
    let exporter = match init_tracing(cli.log_format, cli.otlp_endpoint.as_deref()) {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("herald: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("herald: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herald: {}", herald::error::chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_call;

    #[test]
    fn the_first_call_is_plaintext_only_without_tls() {
        let addr = "127.0.0.1:50051".parse().expect("address");
        let plain = first_call("hk_x", None, addr);
        assert!(plain.contains("-plaintext 127.0.0.1:50051 list"), "{plain}");
        let tls = first_call("hk_x", Some(std::path::Path::new("cert.pem")), addr);
        assert!(!tls.contains("-plaintext"), "{tls}");
        assert!(
            tls.contains("-cacert cert.pem localhost:50051 list"),
            "by a name a certificate holds: {tls}"
        );
        let public = first_call(
            "hk_x",
            Some(std::path::Path::new("cert.pem")),
            "203.0.113.7:443".parse().expect("address"),
        );
        assert!(public.contains("203.0.113.7:443"), "{public}");
    }
}
