//! The `tether` command.

mod connect;

use clap::{Parser, Subcommand};

/// Tether: WebSocket client platform.
#[derive(Parser)]
#[command(name = "tether", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to a WebSocket server: stdin lines go out as messages, messages
    /// that arrive are printed on stdout.
    Connect(connect::ConnectArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Connect(args) => connect::run(args).await,
        }
    });
    // Exit at once: a blocking stdin read must not hold the process open.
    std::process::exit(code);
}
