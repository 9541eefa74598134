//! `tether clients …`: the management API from the command line.

use std::io::{BufRead, BufReader, Write};

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

/// Where the API is and how to authenticate.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The management API.
    #[arg(
        long,
        env = "TETHER_API",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub api: String,
    /// The admin token.
    #[arg(
        long,
        env = "TETHER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ClientsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: ClientsCommand,
}

/// Instance fields for `add` and `edit`.
#[derive(Args, Debug, Default)]
pub struct Fields {
    /// Server URL (ws:// or wss://).
    #[arg(long)]
    pub url: Option<String>,
    /// Basic-auth user ("" clears it).
    #[arg(long)]
    pub user: Option<String>,
    /// Take the Basic-auth password from this environment variable (kept
    /// off the command line and out of shell history).
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// A request header, 'Name: value' (repeatable; replaces all headers).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,
    /// Connect timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Connect at start and reconnect when the link is lost.
    #[arg(long)]
    pub auto_connect: Option<bool>,
    /// Honour HTTP_PROXY / HTTPS_PROXY / NO_PROXY.
    #[arg(long)]
    pub use_env_proxy: Option<bool>,
    /// A module setting over the type's, 'KEY=VALUE' (repeatable; replaces
    /// all the instance's settings). VALUE is JSON when it parses as JSON
    /// (`subscribe=["/queue/a"]`, `qos=1`), else a string.
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// List every client with its live state.
    List,
    /// Show one client.
    Show { key: String },
    /// Add a client instance of a configured type.
    Add {
        /// The client type.
        #[arg(long = "type")]
        type_name: String,
        /// The key (a UUID when left out).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change a client. The change applies only to the version read just
    /// before (or the one given with --if-version): if someone else changed
    /// the client meanwhile, it is refused instead of overwriting theirs.
    Edit {
        key: String,
        /// Apply only to this version (the `version` that `show` printed).
        #[arg(long, value_name = "N")]
        if_version: Option<i64>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Delete a client.
    Rm { key: String },
    /// Connect a client.
    Connect { key: String },
    /// Disconnect a client (and stop reconnecting it).
    Disconnect { key: String },
    /// Send a message on an open client.
    Send {
        key: String,
        /// The text to send.
        text: Option<String>,
        /// Send these base64 bytes as a binary message instead.
        #[arg(long, conflicts_with = "text")]
        base64: Option<String>,
    },
    /// Follow live events (of one client, or all), one JSON object per line.
    Events { key: Option<String> },
    /// Show the audit log.
    Audit,
    /// Show the client types.
    Types,
}

struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    fn new(args: &ApiArgs) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Api {
            base: args.api.trim_end_matches('/').to_string(),
            token: args.token.clone(),
            agent,
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.request_if(method, path, body, None)
    }

    /// A request; with `version`, sent with `If-Match` so that it applies
    /// only to that version of the instance.
    fn request_if(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        version: Option<i64>,
    ) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header(
                "Authorization",
                format!("Bearer {}", self.token.as_deref().unwrap_or("")),
            )
            .header("X-Tether-Actor", "cli");
        if let Some(v) = version {
            builder = builder.header("If-Match", format!("\"{v}\""));
        }
        let bad = |e: ureq::http::Error| format!("cannot build the request for {url}: {e}");
        let result = match body {
            Some(b) => self.agent.run(
                builder
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .map_err(bad)?,
            ),
            None => self.agent.run(builder.body(()).map_err(bad)?),
        };
        let mut response =
            result.map_err(|e| format!("cannot reach the Tether API at {}: {e}", self.base))?;
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(value)
        } else {
            let detail = value
                .get("detail")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            Err(format!(
                "{} {}: {detail}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ))
        }
    }

    fn stream(&self, path: &str) -> Result<(), String> {
        let url = format!("{}{}", self.base, path);
        let mut response = self
            .agent
            .get(&url)
            .header(
                "Authorization",
                &format!("Bearer {}", self.token.as_deref().unwrap_or("")),
            )
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| format!("cannot reach the Tether API at {}: {e}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            return Err(format!("{}: {text}", status.as_u16()));
        }
        let reader = BufReader::new(response.into_body().into_reader());
        let mut out = std::io::stdout();
        for line in reader.lines() {
            let line = line.map_err(|e| format!("event stream ended: {e}"))?;
            if let Some(data) = line.strip_prefix("data:") {
                if writeln!(out, "{}", data.trim())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn fields_body(fields: Fields) -> Result<Map<String, Value>, String> {
    let mut body = Map::new();
    if let Some(u) = fields.url {
        body.insert("url".into(), json!(u));
    }
    if let Some(u) = fields.user {
        body.insert("user".into(), json!(u));
    }
    if let Some(var) = fields.password_env {
        let p =
            std::env::var(&var).map_err(|_| format!("environment variable {var} is not set"))?;
        body.insert("password".into(), json!(p));
    }
    if !fields.headers.is_empty() {
        let mut h = Map::new();
        for header in &fields.headers {
            let (n, v) = header
                .split_once(':')
                .ok_or_else(|| format!("header {header:?} must look like 'Name: value'"))?;
            h.insert(n.trim().to_string(), json!(v.trim()));
        }
        body.insert("headers".into(), Value::Object(h));
    }
    if let Some(t) = fields.timeout {
        body.insert("timeout".into(), json!(t));
    }
    if let Some(a) = fields.auto_connect {
        body.insert("auto_connect".into(), json!(a));
    }
    if let Some(p) = fields.use_env_proxy {
        body.insert("use_env_proxy".into(), json!(p));
    }
    if !fields.settings.is_empty() {
        let mut settings = Map::new();
        for s in &fields.settings {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("setting {s:?} must look like KEY=VALUE"))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
            settings.insert(k.trim().to_string(), value);
        }
        body.insert("settings".into(), Value::Object(settings));
    }
    Ok(body)
}

fn print_table(clients: &Value) {
    let rows: Vec<[String; 6]> = clients
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| {
                c.get(k)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .unwrap_or_default()
            };
            let err = c
                .get("last_error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            [
                s("key"),
                s("type"),
                s("state"),
                s("url"),
                s("auto_connect"),
                err,
            ]
        })
        .collect();
    let header = ["KEY", "TYPE", "STATE", "URL", "AUTO", "LAST ERROR"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn print_value(v: &Value, json_out: bool) {
    if json_out {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

fn enc(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs a `clients` command; returns the exit status.
pub fn run(args: ClientsArgs) -> i32 {
    let api = Api::new(&args.api);
    let json_out = args.api.json;
    let result = match args.command {
        ClientsCommand::List => api.request("GET", "/api/clients", None).map(|v| {
            if json_out {
                println!("{v}")
            } else {
                print_table(&v)
            }
        }),
        ClientsCommand::Show { key } => api
            .request("GET", &format!("/api/clients/{}", enc(&key)), None)
            .map(|v| print_value(&v, json_out)),
        ClientsCommand::Add {
            type_name,
            key,
            fields,
        } => fields_body(fields).and_then(|mut body| {
            body.insert("type".into(), json!(type_name));
            if let Some(k) = key {
                body.insert("key".into(), json!(k));
            }
            api.request("POST", "/api/clients", Some(Value::Object(body)))
                .map(|v| print_value(&v, json_out))
        }),
        ClientsCommand::Edit {
            key,
            if_version,
            fields,
        } => fields_body(fields).and_then(|body| {
            let path = format!("/api/clients/{}", enc(&key));
            let version = match if_version {
                Some(v) => v,
                None => api.request("GET", &path, None)?["version"]
                    .as_i64()
                    .ok_or_else(|| format!("the API sent no version for {key:?}"))?,
            };
            api.request_if("PATCH", &path, Some(Value::Object(body)), Some(version))
                .map(|v| print_value(&v, json_out))
        }),
        ClientsCommand::Rm { key } => api
            .request("DELETE", &format!("/api/clients/{}", enc(&key)), None)
            .map(|_| {
                if !json_out {
                    println!("deleted {key}");
                }
            }),
        ClientsCommand::Connect { key } => api
            .request("POST", &format!("/api/clients/{}/connect", enc(&key)), None)
            .map(|v| print_value(&v, json_out)),
        ClientsCommand::Disconnect { key } => api
            .request(
                "POST",
                &format!("/api/clients/{}/disconnect", enc(&key)),
                None,
            )
            .map(|v| print_value(&v, json_out)),
        ClientsCommand::Send { key, text, base64 } => {
            let body = match (text, base64) {
                (Some(t), None) => Ok(json!({"text": t})),
                (None, Some(b)) => Ok(json!({"base64": b})),
                _ => Err("give the text to send, or --base64 BYTES".to_string()),
            };
            body.and_then(|b| {
                api.request("POST", &format!("/api/clients/{}/send", enc(&key)), Some(b))
                    .map(|_| ())
            })
        }
        ClientsCommand::Events { key } => match key {
            Some(k) => api.stream(&format!("/api/clients/{}/events", enc(&k))),
            None => api.stream("/api/events"),
        },
        ClientsCommand::Audit => api
            .request("GET", "/api/audit", None)
            .map(|v| print_value(&v, json_out)),
        ClientsCommand::Types => api
            .request("GET", "/api/types", None)
            .map(|v| print_value(&v, json_out)),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tether clients: {e}");
            1
        }
    }
}
