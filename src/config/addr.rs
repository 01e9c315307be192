//! `--addr` as people type it: `127.0.0.1:3000`, `localhost:3000`,
//! `[::1]:3000`, a bare host (port 3000), or `:3000` (loopback).
//!
//! A name is resolved when the flags are read. `localhost` and `:PORT` mean
//! loopback: 127.0.0.1, and ::1 too where the machine has it. Listening on
//! every interface is never implied: it stays an explicit `0.0.0.0:3000`
//! or `[::]:3000`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// The port a bare host listens on.
pub const DEFAULT_PORT: u16 = 3000;

/// What the forms are, for every error message.
const FORMS: &str = "expected HOST:PORT, [IPv6]:PORT, HOST or :PORT (e.g. 127.0.0.1:3000, localhost:8080, [::1]:3000, :3000)";

/// Where to listen: the text as typed, and the addresses it means (more
/// than one for `localhost`, where ::1 is tried after 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    text: String,
    addrs: Vec<SocketAddr>,
    /// The addresses after the first were implied by a loopback name: one
    /// that cannot be bound (no IPv6 here) is left out, not an error.
    optional_rest: bool,
}

impl ListenAddr {
    /// The addresses, first the one whose port the others follow.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether the addresses after the first may be left out if they
    /// cannot be bound.
    pub(crate) fn rest_is_optional(&self) -> bool {
        self.optional_rest
    }

    /// The same host, on fixed addresses (a supervisor tells its workers
    /// the port it chose for `:0`).
    pub(crate) fn fixed(addrs: Vec<SocketAddr>) -> ListenAddr {
        let text = addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        ListenAddr {
            text,
            addrs,
            optional_rest: false,
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Loopback on `port`: 127.0.0.1, then ::1.
fn loopback(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
    ]
}

/// Parses `--addr` (see the module doc).
pub fn parse_addr(text: &str) -> Result<ListenAddr, String> {
    let typed = text.trim();
    let done = |addrs: Vec<SocketAddr>, optional_rest| {
        Ok(ListenAddr {
            text: typed.to_owned(),
            addrs,
            optional_rest,
        })
    };
    if typed.is_empty() {
        return Err(format!("an empty address: {FORMS}"));
    }
    // `:PORT`: loopback (`::1` is an address, not a port).
    if let Some(port) = typed.strip_prefix(':')
        && !port.contains(':')
    {
        return done(loopback(parse_port(port, typed)?), true);
    }
    // A literal: `1.2.3.4:5`, `[::1]:5`.
    if let Ok(addr) = typed.parse::<SocketAddr>() {
        return done(vec![addr], false);
    }
    // A bare literal: `1.2.3.4`, `::1`, `[::1]`.
    let bare = typed.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return done(vec![SocketAddr::new(ip, DEFAULT_PORT)], false);
    }
    // A name, with or without a port.
    let (host, port) = match typed.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, parse_port(port, typed)?),
        Some(_) => return Err(format!("'{typed}' is not an address: {FORMS}")),
        None => (typed, DEFAULT_PORT),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!("'{typed}' is not an address: {FORMS}"));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return done(loopback(port), true);
    }
    // Digits and dots are never a name: say what is wrong with the IPv4
    // address, without asking DNS (which may read `1.2.3` as 1.2.0.3).
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(not_ipv4(host));
    }
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("'{host}' has no address"));
    }
    // A name may resolve to several addresses; the first is enough, and a
    // second would have to be free on the same port.
    addrs.truncate(1);
    done(addrs, false)
}

/// Why `host`, all digits and dots, is not an IPv4 address.
fn not_ipv4(host: &str) -> String {
    let octets: Vec<&str> = host.split('.').collect();
    if octets.len() != 4 {
        return format!(
            "'{host}' is not an IPv4 address: it has {} parts, not 4",
            octets.len()
        );
    }
    match octets.iter().find(|o| o.parse::<u8>().is_err()) {
        Some(&"") => format!("'{host}' is not an IPv4 address: an empty octet"),
        Some(o) => format!("'{host}' is not an IPv4 address: the octet {o} is over 255"),
        None => format!("'{host}' is not an IPv4 address"),
    }
}

fn parse_port(port: &str, typed: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("'{port}' in '{typed}' is not a port (0-65535): {FORMS}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(text: &str) -> Vec<String> {
        parse_addr(text)
            .unwrap()
            .addrs()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn the_forms_people_type() {
        assert_eq!(addrs("127.0.0.1:3000"), ["127.0.0.1:3000"]);
        assert_eq!(addrs("127.0.0.1"), ["127.0.0.1:3000"]);
        assert_eq!(addrs("[::1]:3000"), ["[::1]:3000"]);
        assert_eq!(addrs("::1"), ["[::1]:3000"]);
        assert_eq!(addrs("[::1]"), ["[::1]:3000"]);
        assert_eq!(addrs("localhost:8080"), ["127.0.0.1:8080", "[::1]:8080"]);
        assert_eq!(addrs("LOCALHOST"), ["127.0.0.1:3000", "[::1]:3000"]);
        assert_eq!(addrs(":3000"), ["127.0.0.1:3000", "[::1]:3000"]);
        assert_eq!(
            addrs("0.0.0.0:3000"),
            ["0.0.0.0:3000"],
            "all interfaces, said out loud"
        );
        assert_eq!(addrs("[::]:80"), ["[::]:80"]);
        assert!(parse_addr(":3000").unwrap().rest_is_optional());
        assert!(!parse_addr("127.0.0.1").unwrap().rest_is_optional());
    }

    #[test]
    fn numbers_that_are_not_ipv4_addresses_are_said_so_without_dns() {
        for (bad, says) in [
            ("999.1.1.1:1", "the octet 999 is over 255"),
            ("1.2.3.256", "the octet 256 is over 255"),
            ("1.2.3:80", "it has 3 parts, not 4"),
            ("1..2.3", "an empty octet"),
            ("12345", "it has 1 parts, not 4"),
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(
                e.contains("is not an IPv4 address") && e.contains(says),
                "{bad}: {e}"
            );
            assert!(!e.contains("resolve"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_say_what_is_expected() {
        for bad in [
            "",
            ":",
            ":99999",
            "localhost:http",
            "a b:3",
            "1.2.3.4:5:6",
            "host/x",
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(
                e.contains("expected HOST:PORT") || e.contains("empty"),
                "{bad:?}: {e}"
            );
        }
    }
}
