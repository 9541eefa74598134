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
    /// Manage the key that encrypts stored secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-encrypt every stored secret under a new key. Stop the host first;
    /// the current key comes from TETHER_SECRET_KEY (or secret_key_file),
    /// the new one from TETHER_NEW_SECRET_KEY or --new-key-file. Then start
    /// the host with the new key.
    Rotate {
        /// The host's config file.
        #[arg(long, short)]
        config: std::path::PathBuf,
        /// A file with the new key (base64 of 32 bytes).
        #[arg(long)]
        new_key_file: Option<std::path::PathBuf>,
    },
    /// Print a fresh random key (base64 of 32 bytes).
    Generate,
}

async fn secrets(command: SecretsCommand) -> i32 {
    match command {
        SecretsCommand::Generate => {
            println!("{}", tether_host::store::SecretKey::generate().to_base64());
            0
        }
        SecretsCommand::Rotate {
            config,
            new_key_file,
        } => {
            let new_key = match new_key_file {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display())),
                None => std::env::var("TETHER_NEW_SECRET_KEY").map_err(|_| {
                    "give the new key in TETHER_NEW_SECRET_KEY or --new-key-file".to_string()
                }),
            };
            let result = match new_key {
                Ok(key) => tether_host::serve::rotate(&config, &key)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => {
                    eprintln!("tether secrets: re-encrypted the secrets of {n} instances; start the host with the new key");
                    0
                }
                Err(e) => {
                    eprintln!("tether secrets rotate: {e}");
                    1
                }
            }
        }
    }
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
            Command::Secrets(command) => secrets(command).await,
        }
    });
    // Exit at once: a blocking stdin read must not hold the process open.
    std::process::exit(code);
}
