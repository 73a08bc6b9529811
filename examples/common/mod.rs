//! Flags shared by the examples that talk to a front end (std parsing, no dependency).
//!
//! Each flag can also come from an environment variable (the flag wins):
//!
//! | flag | variable | meaning |
//! |---|---|---|
//! | `--proxy HOST:PORT` | `UCMA_PROXY` | the front end (outbound proxy) |
//! | `--proxy-name NAME` | `UCMA_PROXY_NAME` | its certificate name (default: HOST) |
//! | `--cert PEM` | `UCMA_CERT` | the application's certificate chain |
//! | `--key PEM` | `UCMA_KEY` | its private key |
//! | `--ca PEM` | `UCMA_CA` | roots that verify the front end |
//! | `--uri URI` | `UCMA_URI` | the application's identity (From) |
//! | `--listen ADDR` | `UCMA_LISTEN` | where the platform listens (mutual TLS, or TCP with `--tcp`) |
//! | `--home-domain D` | `UCMA_HOME_DOMAINS` (comma-separated) | home domains, repeatable |
//! | `--online-user URI` | `UCMA_ONLINE_USERS` (comma-separated) | cloud-homed users, repeatable |
//! | `--tcp` | `UCMA_TCP=1` | plain TCP instead of TLS |
#![allow(dead_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ucma::prelude::*;

/// The parsed flags.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub proxy: Option<String>,
    pub proxy_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ca: Option<String>,
    pub uri: Option<String>,
    pub listen: Option<String>,
    pub home_domains: Vec<String>,
    pub online_users: Vec<String>,
    pub tcp: bool,
}

/// The usage text of the shared flags.
pub const USAGE: &str = "  --proxy HOST:PORT    front end (UCMA_PROXY)
  --proxy-name NAME    front end certificate name, default HOST (UCMA_PROXY_NAME)
  --cert PEM           application certificate chain (UCMA_CERT)
  --key PEM            application private key (UCMA_KEY)
  --ca PEM             trust roots (UCMA_CA)
  --uri URI            application identity, e.g. sip:bot@contoso.com (UCMA_URI)
  --listen ADDR        listen address, e.g. 0.0.0.0:5061 (UCMA_LISTEN)
  --home-domain D      home domain, repeatable (UCMA_HOME_DOMAINS=a,b)
  --online-user URI    cloud-homed user, repeatable (UCMA_ONLINE_USERS=a,b)
  --tcp                plain TCP instead of TLS (UCMA_TCP=1)";

impl Flags {
    /// Parses `args` (without the program name) over the environment; returns the flags
    /// and the positional arguments.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<(Flags, Vec<String>), String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let list = |k: &str| {
            env(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut f = Flags {
            proxy: env("UCMA_PROXY"),
            proxy_name: env("UCMA_PROXY_NAME"),
            cert: env("UCMA_CERT"),
            key: env("UCMA_KEY"),
            ca: env("UCMA_CA"),
            uri: env("UCMA_URI"),
            listen: env("UCMA_LISTEN"),
            home_domains: list("UCMA_HOME_DOMAINS"),
            online_users: list("UCMA_ONLINE_USERS"),
            tcp: env("UCMA_TCP").is_some_and(|v| v != "0" && v != "false"),
        };
        let (mut from_flags_domains, mut from_flags_users) = (Vec::new(), Vec::new());
        let mut positional = Vec::new();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            let mut value = |n: &str| {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("{n} needs a value"))
            };
            match name.as_str() {
                "--proxy" => f.proxy = Some(value("--proxy")?),
                "--proxy-name" => f.proxy_name = Some(value("--proxy-name")?),
                "--cert" => f.cert = Some(value("--cert")?),
                "--key" => f.key = Some(value("--key")?),
                "--ca" => f.ca = Some(value("--ca")?),
                "--uri" => f.uri = Some(value("--uri")?),
                "--listen" => f.listen = Some(value("--listen")?),
                "--home-domain" => from_flags_domains.push(value("--home-domain")?),
                "--online-user" => from_flags_users.push(value("--online-user")?),
                "--tcp" => f.tcp = true,
                s if s.starts_with("--") => return Err(format!("unknown flag {s}")),
                _ => positional.push(a),
            }
        }
        if !from_flags_domains.is_empty() {
            f.home_domains = from_flags_domains;
        }
        if !from_flags_users.is_empty() {
            f.online_users = from_flags_users;
        }
        Ok((f, positional))
    }

    /// The topology the flags describe.
    pub fn topology(&self) -> Result<Topology, String> {
        let mut dir = StaticDirectory::new();
        for u in &self.online_users {
            dir = dir
                .with_user(u)
                .map_err(|e| format!("--online-user {u}: {e}"))?;
        }
        Ok(Topology::new(&self.home_domains).with_directory(Arc::new(dir)))
    }

    /// The front end's address and certificate name.
    fn proxy(&self) -> Result<(SocketAddr, String), String> {
        let p = self
            .proxy
            .as_deref()
            .ok_or("--proxy HOST:PORT is required")?;
        let addr = p
            .to_socket_addrs()
            .map_err(|e| format!("--proxy {p}: {e}"))?
            .next()
            .ok_or_else(|| format!("--proxy {p}: no address"))?;
        let host = p.rsplit_once(':').map(|(h, _)| h).unwrap_or(p);
        let name = self
            .proxy_name
            .clone()
            .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
        Ok((addr, name))
    }

    /// The host part of `--uri`: the application's FQDN.
    fn fqdn(&self) -> String {
        self.uri
            .as_deref()
            .and_then(|u| {
                u.split_once('@')
                    .map(|(_, h)| h)
                    .or(u.split_once(':').map(|(_, h)| h))
            })
            .map(|h| h.split([';', ':', '>']).next().unwrap_or(h).to_string())
            .unwrap_or_else(|| "ucma.invalid".to_string())
    }

    /// Platform settings: a trusted application over mutual TLS, or with `--tcp` a client
    /// platform over plain TCP.
    pub fn platform_settings(&self, user_agent: &str) -> Result<PlatformSettings, String> {
        let (addr, name) = self.proxy()?;
        let topology = self.topology()?;
        let listen: Option<SocketAddr> = match &self.listen {
            Some(l) => Some(l.parse().map_err(|e| format!("--listen {l}: {e}"))?),
            None => None,
        };
        if self.tcp {
            let identity = match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some(load_identity(c, k)?),
                (None, None) => None,
                (Some(_), None) => return Err("--cert needs --key".to_string()),
                (None, Some(_)) => return Err("--key needs --cert".to_string()),
            };
            let proxy = OutboundProxy::tcp(addr);
            // Over TCP a trusted application still has a certificate; without one this is a
            // client platform, which does not listen.
            let Some(identity) = identity else {
                if let Some(l) = &self.listen {
                    return Err(format!(
                        "--listen {l} with --tcp needs --cert and --key (without them the \
                         platform is a client, which does not listen)"
                    ));
                }
                return Ok(
                    ClientPlatformSettings::new(user_agent, TrustRoots::new(), proxy)
                        .topology(topology)
                        .into(),
                );
            };
            let mut s = ServerPlatformSettings::new(
                user_agent,
                self.fqdn(),
                identity,
                TrustRoots::new(),
                proxy,
            )
            .topology(topology);
            if let Some(l) = listen {
                s = s.listen(Listener::tcp(l).allow_untrusted_peers());
            }
            return Ok(s.into());
        }
        let cert = self
            .cert
            .as_deref()
            .ok_or("--cert PEM is required (or --tcp)")?;
        let key = self
            .key
            .as_deref()
            .ok_or("--key PEM is required (or --tcp)")?;
        let ca = self
            .ca
            .as_deref()
            .ok_or("--ca PEM is required (or --tcp)")?;
        // Read one file at a time, so that an error names the flag and the file.
        let identity = load_identity(cert, key)?;
        let roots = TrustRoots::from_pem_file(ca).map_err(|e| format!("--ca {ca}: {e}"))?;
        let mut s = ServerPlatformSettings::new(
            user_agent,
            self.fqdn(),
            identity,
            roots,
            OutboundProxy::tls(addr, name),
        )
        .topology(topology);
        if let Some(l) = listen {
            s = s.listen(Listener::mutual_tls(l));
        }
        Ok(s.into())
    }
}

/// The application's certificate chain and key; an error names the flag and the file.
fn load_identity(cert: &str, key: &str) -> Result<Identity, String> {
    let chain = std::fs::read(cert).map_err(|e| format!("--cert {cert}: {e}"))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("--key {key}: {e}"))?;
    Identity::from_pem(&chain, &key_pem).map_err(|e| format!("--cert {cert} / --key {key}: {e}"))
}
