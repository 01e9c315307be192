//! The README's nginx configuration, checked with Debian's nginx 1.22:
//! `nginx -t` accepts the whole documented block (with a throwaway
//! self-signed certificate made here), and its proxying part, on plain
//! HTTP in front of a real server, passes a stream whose ticks arrive one
//! by one as they are sent, and a chat post. Without nginx (or openssl)
//! the tests skip loudly; under `CI=true` they fail.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The nginx binary, if there is one.
fn nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The first nginx block in the README's Deploying section.
fn documented_config() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let deploying = readme
        .split("## Deploying")
        .nth(1)
        .expect("a Deploying section");
    let block = deploying
        .split("```nginx\n")
        .nth(1)
        .expect("an nginx block");
    block.split("```").next().unwrap().to_owned()
}

/// An nginx.conf around `server_config`, everything under `dir`.
fn wrap(dir: &Path, server_config: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         {server_config}\n}}\n"
    )
}

/// Makes a self-signed certificate and key for `chat.example.org`.
fn certificate(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut command = Command::new("openssl");
    command
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=chat.example.org", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null());
    let Ok(mut child) = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
        return None;
    };
    wait_or_kill(&mut child, Duration::from_secs(60), "openssl")
        .success()
        .then_some((cert, key))
}

#[test]
fn nginx_accepts_the_documented_block() {
    let Some(nginx) = nginx() else {
        return skip_loudly("no nginx (apt-get install nginx-light)");
    };
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = certificate(dir.path()) else {
        return skip_loudly("no openssl to make a throwaway certificate (apt-get install openssl)");
    };
    let config = documented_config()
        .replace(
            "/etc/ssl/certs/chat.example.org.pem",
            cert.to_str().unwrap(),
        )
        .replace(
            "/etc/ssl/private/chat.example.org.key",
            key.to_str().unwrap(),
        );
    assert!(config.contains("listen 443 ssl http2"), "{config}");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, wrap(dir.path(), &config)).unwrap();
    let output = output_within(
        Command::new(nginx)
            .args(["-t", "-e", "stderr", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "nginx -t refused the documented block:\n{said}\n{config}"
    );
    assert!(said.contains("syntax is ok"), "{said}");
}

/// nginx in front of `upstream`, on a free port of its own, serving the
/// documented block's proxying part on plain HTTP; killed when dropped.
struct Proxy {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy(nginx: &Path, upstream: std::net::SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The documented block, on plain HTTP: no TLS listeners, no redirect
    // server, the test server as the upstream.
    let documented = documented_config();
    let first_server = documented
        .split("\nserver {\n    listen 80;")
        .next()
        .unwrap();
    let config: String = first_server
        .lines()
        .filter(|l| !l.trim_start().starts_with("listen ") && !l.trim_start().starts_with("ssl_"))
        .map(|l| {
            if l.trim_start().starts_with("server_name") {
                format!("    listen 127.0.0.1:{port};\n{l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect::<String>()
        .replace("server 127.0.0.1:3000;", &format!("server {upstream};"));
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, wrap(dir.path(), &config)).unwrap();
    let child = Command::new(nginx)
        .args(["-e", "stderr", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    poll_until(Duration::from_secs(20), "nginx never listened", || {
        std::net::TcpStream::connect(addr).ok().map(|_| ())
    });
    Proxy {
        child,
        addr,
        _dir: dir,
    }
}

#[test]
fn through_nginx_each_tick_arrives_as_it_is_sent_and_chat_works() {
    let Some(nginx) = nginx() else {
        return skip_loudly("no nginx (apt-get install nginx-light)");
    };
    let server = TestServer::start(&["--interval", "200ms"]);
    let proxy = proxy(&nginx, server.addr);

    let mut stream = connect(proxy.addr);
    send(
        &mut stream,
        "GET /sse HTTP/1.1\r\nHost: chat.example.org\r\n\r\n",
    );
    let head = read_response(&mut stream, true);
    assert_eq!(head.status, 200, "{}", head.head);
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    // Each tick is read the moment it comes: if nginx held bytes back, the
    // ticks would come in bursts, with no gap between them.
    let mut arrivals = Vec::new();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut read_more = |seen: &mut String| {
        let n = stream.read(&mut buf).expect("the stream goes on");
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    };
    while arrivals.len() < 6 {
        read_more(&mut seen);
        // Chunked through nginx or not, each "id: " is one tick.
        let now = Instant::now();
        arrivals.resize(seen.matches("id: ").count(), now);
    }
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|&g| g >= Duration::from_millis(100)),
        "ticks 200 ms apart came {gaps:?} apart:\n{seen}"
    );

    // A chat post through the proxy, and its event on the proxied stream.
    let mut post = connect(proxy.addr);
    let body = r#"{"user":"ada","text":"through the proxy"}"#;
    send(
        &mut post,
        &format!(
            "POST /messages HTTP/1.1\r\nHost: chat.example.org\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let response = read_response(&mut post, false);
    assert_eq!(response.status, 202, "{}", response.text());
    let id = serde_json::from_slice::<serde_json::Value>(&response.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let wanted = format!("id: {id}\n");
    while !(seen.contains(&wanted) && seen.contains("through the proxy")) {
        read_more(&mut seen);
    }
}
