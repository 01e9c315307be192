//! `--redis URL` as people write it: `redis://[[user]:password@]host:port[/db]`.
//! The password never reaches the log: [`RedisUrl`]'s `Display` leaves it
//! out. `rediss://` (TLS) is refused with a clear message.

use std::fmt;

/// Where Redis is, and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// An ACL user name (Redis 6+); `None` for the default user.
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: u32,
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let login = match (&self.user, &self.password) {
            (Some(user), Some(_)) => format!("{user}:***@"),
            (None, Some(_)) => ":***@".to_owned(),
            (Some(user), None) => format!("{user}@"),
            (None, None) => String::new(),
        };
        write!(f, "redis://{login}{host}:{}/{}", self.port, self.db)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Reads a Redis URL (clap's value parser for `--redis` and `REDIS_URL`).
pub fn parse_redis_url(text: &str) -> Result<RedisUrl, String> {
    if text.starts_with("rediss://") {
        return Err(
            "rediss:// (TLS) is not supported: reach Redis over a private network or \
                    a TLS tunnel (stunnel, spiped), and use redis://"
                .into(),
        );
    }
    let rest = text
        .strip_prefix("redis://")
        .ok_or("a Redis URL starts with redis://")?;
    let (authority, db) = match rest.split_once('/') {
        Some((authority, "")) => (authority, 0),
        Some((authority, db)) => (
            authority,
            db.parse()
                .map_err(|_| format!("'{db}' is not a database number"))?,
        ),
        None => (rest, 0),
    };
    let (login, address) = match authority.rsplit_once('@') {
        Some((login, address)) => (Some(login), address),
        None => (None, authority),
    };
    let (user, password) = match login {
        None => (None, None),
        Some(login) => {
            let (user, password) = match login.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (login, None),
            };
            let decode = |s: &str| {
                crate::http::percent_decode(s)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| "bad percent escape in the Redis URL's login".to_owned())
            };
            let user = if user.is_empty() {
                None
            } else {
                Some(decode(user)?)
            };
            (user, password.map(decode).transpose()?)
        }
    };
    let (host, port) = if let Some(v6) = address.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').ok_or("an IPv6 host needs its ]")?;
        (host, rest.strip_prefix(':').unwrap_or(""))
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (address, ""),
        }
    };
    if host.is_empty() {
        return Err("the Redis URL has no host".into());
    }
    let port = if port.is_empty() {
        6379
    } else {
        port.parse()
            .map_err(|_| format!("'{port}' is not a port number"))?
    };
    Ok(RedisUrl {
        host: host.to_owned(),
        port,
        user,
        password,
        db,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_people_write_them() {
        let url = parse_redis_url("redis://127.0.0.1:6380").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.db),
            ("127.0.0.1", 6380, 0)
        );
        assert_eq!((url.user, url.password), (None, None));
        let url = parse_redis_url("redis://:s3cret@db.internal/2").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.db),
            ("db.internal", 6379, 2)
        );
        assert_eq!(url.password.as_deref(), Some("s3cret"));
        let url = parse_redis_url("redis://sse:p%40ss@[::1]:7000/0").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 7000));
        assert_eq!(url.user.as_deref(), Some("sse"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        // The password is never shown.
        assert_eq!(url.to_string(), "redis://sse:***@[::1]:7000/0");
        assert!(!format!("{url:?}").contains("p@ss"));
    }

    #[test]
    fn refusals() {
        assert!(parse_redis_url("rediss://h:1").unwrap_err().contains("TLS"));
        assert!(parse_redis_url("http://h").is_err());
        assert!(parse_redis_url("redis://:1").is_err());
        assert!(parse_redis_url("redis://h:port").is_err());
        assert!(parse_redis_url("redis://h/x").is_err());
        assert!(parse_redis_url("redis://u:%zz@h").is_err());
    }
}
