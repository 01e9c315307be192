//! The shipped nginx configuration, `deploy/nginx.conf`, run by Debian's
//! nginx 1.22: `nginx -t` accepts the file as it is (beside a throwaway
//! self-signed certificate made here), and the same file, with only its
//! two ports and its upstream changed to free ones, proxies over TLS a
//! stream whose ticks arrive one by one as they are sent, a chat post,
//! and redirects plain HTTP to the TLS port. The TLS client is `openssl
//! s_client`. Without nginx or openssl the tests skip loudly; under
//! `CI=true` they fail.

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

/// The shipped configuration, as the repository has it.
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf");

fn shipped() -> String {
    std::fs::read_to_string(SHIPPED).expect("deploy/nginx.conf")
}

/// `text` with every `from` replaced by `to`, which must occur `times`.
fn replace_exactly(text: &str, from: &str, to: &str, times: usize) -> String {
    assert_eq!(text.matches(from).count(), times, "{from:?} in {SHIPPED}");
    text.replace(from, to)
}

/// Makes a self-signed certificate and key for `localhost` in `dir`,
/// where the shipped configuration looks for them (as the README's
/// try-out makes them).
fn certificate(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut command = Command::new("openssl");
    command
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        // A name (clients check the subjectAltName, not the CN), and not
        // a CA: a self-signed certificate that a client can trust directly.
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
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
fn the_readme_shows_the_shipped_file() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```nginx\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("an nginx block in the README");
    assert_eq!(
        block,
        shipped(),
        "README's nginx block and {SHIPPED} differ"
    );
}

#[test]
fn nginx_accepts_the_shipped_file_as_it_is() {
    let Some(nginx) = nginx() else {
        return skip_loudly("no nginx (apt-get install nginx-light)");
    };
    let dir = tempfile::tempdir().unwrap();
    if certificate(dir.path()).is_none() {
        return skip_loudly("no openssl to make a throwaway certificate (apt-get install openssl)");
    }
    let config = shipped();
    assert!(config.contains("listen 8443 ssl http2"), "{config}");
    assert!(config.contains("return 301 https://$host:8443$request_uri"));
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, &config).unwrap();
    let output = output_within(
        Command::new(nginx)
            .args(["-t", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "nginx -t refused {SHIPPED}:\n{said}"
    );
    assert!(said.contains("syntax is ok"), "{said}");
}

/// nginx running the shipped file in front of `upstream`, its TLS and
/// plain ports moved to free ones; killed when dropped.
struct Proxy {
    child: Child,
    tls: u16,
    plain: u16,
    /// Where nginx runs, and the throwaway certificate is (`cert.pem`).
    dir: tempfile::TempDir,
}

impl Drop for Proxy {
    /// SIGTERM, not SIGKILL: nginx's master then stops its worker, which
    /// a killed master would leave running, orphaned.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_or_kill(&mut self.child, Duration::from_secs(10), "nginx");
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `None` when openssl cannot make the certificate.
fn proxy(nginx: &Path, upstream: std::net::SocketAddr) -> Option<Proxy> {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path())?;
    let (tls, plain) = (free_port(), free_port());
    // The listen directives and the redirect's port, nothing else.
    let config = replace_exactly(&shipped(), "8443 ssl", &format!("{tls} ssl"), 2);
    let config = replace_exactly(&config, ":8443$", &format!(":{tls}$"), 1);
    let config = replace_exactly(&config, "8080;", &format!("{plain};"), 2);
    let config = replace_exactly(&config, "127.0.0.1:3000;", &format!("{upstream};"), 1);
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    for port in [tls, plain] {
        poll_until(Duration::from_secs(20), "nginx never listened", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
    }
    Some(Proxy {
        child,
        tls,
        plain,
        dir,
    })
}

/// A TLS connection through `openssl s_client`: what is written to it is
/// sent, what it reads comes out; ended when dropped.
struct Tls(Child);

impl Tls {
    fn connect(port: u16) -> Tls {
        let child = Command::new("openssl")
            .args(["s_client", "-quiet", "-servername", "localhost", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client");
        Tls(child)
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.0.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn read(&mut self, buf: &mut [u8]) -> usize {
        self.0.stdout.as_mut().expect("stdout").read(buf).unwrap()
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn through_nginx_over_tls_each_tick_arrives_as_it_is_sent_and_chat_works() {
    let Some(nginx) = nginx() else {
        return skip_loudly("no nginx (apt-get install nginx-light)");
    };
    let server = TestServer::start(&["--interval", "200ms"]);
    let Some(proxy) = proxy(&nginx, server.addr) else {
        return skip_loudly("no openssl to make a throwaway certificate (apt-get install openssl)");
    };

    // Plain HTTP is sent to the TLS port.
    let mut plain = connect(([127, 0, 0, 1], proxy.plain).into());
    send(&mut plain, "GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let moved = read_response(&mut plain, false);
    assert_eq!(moved.status, 301, "{}", moved.head);
    let location = format!("https://localhost:{}/sse", proxy.tls);
    assert_eq!(moved.header("Location"), Some(location.as_str()));

    let mut stream = Tls::connect(proxy.tls);
    stream.send("GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // Each tick is read the moment it comes: if nginx held bytes back, the
    // ticks would come in bursts, with no gap between them.
    let mut arrivals = Vec::new();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut read_more = |seen: &mut String| {
        let n = stream.read(&mut buf);
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    };
    while arrivals.len() < 6 {
        read_more(&mut seen);
        // Chunked through nginx or not, each "id: " is one tick.
        let now = Instant::now();
        arrivals.resize(seen.matches("id: ").count(), now);
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("Content-Type: text/event-stream"), "{seen}");
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|&g| g >= Duration::from_millis(100)),
        "ticks 200 ms apart came {gaps:?} apart:\n{seen}"
    );

    // A chat post through the proxy, and its event on the proxied stream.
    let mut post = Tls::connect(proxy.tls);
    let body = r#"{"user":"ada","text":"through the proxy"}"#;
    post.send(&format!(
        "POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut answer = String::new();
    let mut answer_buf = [0u8; 4096];
    while !answer.contains("\"id\":") || !answer.trim_end().ends_with('}') {
        let n = post.read(&mut answer_buf);
        assert!(n > 0, "no answer to the post: {answer}");
        answer.push_str(&String::from_utf8_lossy(&answer_buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let json = answer[answer.find('{').unwrap()..].trim_end();
    let id = serde_json::from_str::<serde_json::Value>(json).unwrap()["id"]
        .as_u64()
        .unwrap();
    let wanted = format!("id: {id}\n");
    while !(seen.contains(&wanted) && seen.contains("through the proxy")) {
        read_more(&mut seen);
    }
}

/// `sse-load` over TLS (rustls) through the shipped nginx: with the test
/// certificate as its CA (`--cacert`, the host checked by name), with
/// `--insecure`, and refused when nothing vouches for the certificate.
#[test]
fn sse_load_holds_streams_over_tls() {
    let Some(nginx) = nginx() else {
        return skip_loudly("no nginx (apt-get install nginx-light)");
    };
    let server = TestServer::start(&["--interval", "100ms"]);
    let Some(proxy) = proxy(&nginx, server.addr) else {
        return skip_loudly("no openssl to make a throwaway certificate (apt-get install openssl)");
    };
    let url = format!("https://localhost:{}/sse", proxy.tls);
    let cert = proxy.dir.path().join("cert.pem");
    let run = |extra: &[&str]| {
        let json = proxy.dir.path().join("load.json");
        let output = output_within(
            Command::new(env!("CARGO_BIN_EXE_sse-load"))
                .args([
                    "--url", &url, "-c", "20", "--hold", "1s", "--quiet", "--json",
                ])
                .arg(&json)
                .args(extra),
            Duration::from_secs(60),
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
                .unwrap_or(serde_json::Value::Null);
        (output, report)
    };
    let (output, report) = run(&["--cacert", cert.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report["connected"], 20, "{report}");
    assert!(
        report["events_per_connection"].as_f64().unwrap() >= 5.0,
        "{report}"
    );
    assert_eq!(report["missing_ids"], 0, "{report}");

    let (output, report) = run(&["--insecure"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report["connected"], 20, "{report}");

    // The platform's roots do not know the throwaway certificate.
    let (output, report) = run(&[]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["connected"], 0, "{report}");
    assert_eq!(report["failures"]["tls"], 20, "{report}");
}
