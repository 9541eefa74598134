//! The `tether` command.

mod clients;
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
    /// Run the host: client types from the config, stored instances, the
    /// management API.
    Serve {
        /// The config file (TOML). Without it: no types, API on 127.0.0.1:7878,
        /// store tether.db in the working directory.
        #[arg(long, short)]
        config: Option<std::path::PathBuf>,
    },
    /// Manage client instances through the management API.
    Clients(clients::ClientsArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let command = match cli.command {
        Command::Clients(args) => std::process::exit(clients::run(args)),
        other => other,
    };
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
        match command {
            Command::Connect(args) => connect::run(args).await,
            Command::Serve { config } => {
                let ready = |addr| eprintln!("tether: management API on http://{addr}");
                match tether_host::serve::run(config.as_deref(), ready).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("tether serve: {e}");
                        1
                    }
                }
            }
            Command::Clients(args) => clients::run(args),
        }
    });
    // Exit at once: a blocking stdin read must not hold the process open.
    std::process::exit(code);
}
