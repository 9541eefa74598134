//! Real third-party servers for tests: nginx (TLS), squid and tinyproxy
//! (HTTP CONNECT), dante and pproxy (SOCKS5). Each runs in the foreground
//! from a private folder, on a free loopback port, and is killed on drop.
//! `scripts/install-peers.sh` installs them.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tether-peer-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn require(binary: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: run scripts/install-peers.sh (it installs nginx-light, squid, tinyproxy, dante-server)"
    );
}

fn wait_port(port: u16, child: &mut Child, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{name} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(name: &str, mut cmd: Command, port: u16, dir: PathBuf) -> Peer {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    wait_port(port, &mut child, name);
    Peer { child, port, dir }
}

/// A private CA, a server certificate for localhost/127.0.0.1, one for
/// another name, one that expired in 2020, and a client certificate, made
/// with openssl.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = scratch("pki");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        std::fs::write(
            dir.join("other.ext"),
            "subjectAltName=DNS:other.test\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Tether Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let request = |who: &str| {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ])
        };
        for who in ["server", "client", "other"] {
            request(who);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        // A server certificate that expired years ago: `openssl ca` is the
        // one command in OpenSSL 3.0 that takes explicit dates.
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca=test\n[test]\ndatabase=index.txt\nnew_certs_dir=.\n\
             serial=serial\ndefault_md=sha256\npolicy=any\n[any]\ncommonName=supplied\n",
        )
        .unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        request("expired");
        run(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            "expired.csr",
            "-out",
            "expired.pem",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            "server.ext",
        ]);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx terminating TLS in front of `backend_port`; with `mtls` it also
/// requires a client certificate from the same CA.
pub fn nginx_tls(pki: &Pki, backend_port: u16, mtls: bool) -> Peer {
    nginx_tls_with(pki, "server", backend_port, mtls)
}

/// Like [`nginx_tls`], serving the certificate `cert` (`server` or `other`,
/// whose only name is other.test).
pub fn nginx_tls_with(pki: &Pki, cert: &str, backend_port: u16, mtls: bool) -> Peer {
    require("/usr/sbin/nginx");
    let dir = scratch("nginx");
    let port = free_port();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let client = if mtls {
        format!(
            "ssl_client_certificate {}; ssl_verify_client on;",
            pki.path("ca.pem").display()
        )
    } else {
        String::new()
    };
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {}; ssl_certificate_key {};\n    {client}\n    location / {{\n      proxy_pass http://127.0.0.1:{backend_port};\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n      proxy_read_timeout 60s;\n    }}\n  }}\n}}\n",
        pki.path(&format!("{cert}.pem")).display(),
        pki.path(&format!("{cert}.key")).display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.args([
        "-p",
        &dir.display().to_string(),
        "-c",
        &dir.join("nginx.conf").display().to_string(),
        "-e",
        &dir.join("error.log").display().to_string(),
    ]);
    spawn("nginx", cmd, port, dir)
}

/// squid as a CONNECT proxy that allows every port on loopback.
pub fn squid() -> Peer {
    require("/usr/sbin/squid");
    let dir = scratch("squid");
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "http_port 127.0.0.1:{port}\nacl CONNECT method CONNECT\nacl local src 127.0.0.1/32\nhttp_access allow local\nhttp_access deny all\ncache deny all\npid_filename {d}/squid.pid\naccess_log none\ncache_log {d}/cache.log\ncoredump_dir {d}\npinger_enable off\ndns_nameservers 127.0.0.1\nshutdown_lifetime 0 seconds\n"
    );
    std::fs::write(dir.join("squid.conf"), conf).unwrap();
    let _ = Command::new("chown")
        .args(["-R", "proxy:proxy", &d.to_string()])
        .status();
    let mut cmd = Command::new("/usr/sbin/squid");
    cmd.args(["-N", "-f", &dir.join("squid.conf").display().to_string()]);
    spawn("squid", cmd, port, dir)
}

/// tinyproxy as a CONNECT proxy, with Basic auth when `auth` is given.
pub fn tinyproxy(auth: Option<(&str, &str)>) -> Peer {
    require("/usr/bin/tinyproxy");
    let dir = scratch("tinyproxy");
    let port = free_port();
    let mut conf = format!("User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Error\n");
    if let Some((u, p)) = auth {
        conf.push_str(&format!("BasicAuth {u} {p}\n"));
    }
    std::fs::write(dir.join("tinyproxy.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/bin/tinyproxy");
    cmd.args([
        "-d",
        "-c",
        &dir.join("tinyproxy.conf").display().to_string(),
    ]);
    spawn("tinyproxy", cmd, port, dir)
}

/// Dante as a SOCKS5 server without authentication.
pub fn dante() -> Peer {
    require("/usr/sbin/danted");
    let dir = scratch("dante");
    let port = free_port();
    let conf = format!(
        "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\nclientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\nclient pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\nsocks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n"
    );
    std::fs::write(dir.join("danted.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/danted");
    cmd.args([
        "-f",
        &dir.join("danted.conf").display().to_string(),
        "-p",
        &dir.join("danted.pid").display().to_string(),
    ]);
    spawn("danted", cmd, port, dir)
}

/// pproxy (PyPI) as a SOCKS5 server that requires a username and password.
pub fn pproxy_socks5(user: &str, pass: &str) -> Peer {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/venv/bin/pproxy");
    require(&bin.display().to_string());
    let dir = scratch("pproxy");
    let port = free_port();
    let mut cmd = Command::new(bin);
    // --auth 0: check the credentials on every connection, not once per IP.
    cmd.args([
        "-l",
        &format!("socks5://127.0.0.1:{port}#{user}:{pass}"),
        "--auth",
        "0",
    ]);
    spawn("pproxy", cmd, port, dir)
}
