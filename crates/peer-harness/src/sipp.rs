//! SIPp (Debian `sip-tester`, `/usr/bin/sipp`) as a scripted peer: a scenario XML written
//! to a folder, a bounded run, the exit status and the final statistics.
//!
//! Debian's SIPp has no TLS: it talks TCP or UDP to a front end, and the front end talks TLS
//! to the SDK.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};
use crate::process::{find_binary, free_tcp_ports, listens_on, loopback};

/// Example scenarios, written for this harness.
pub mod scenarios {
    /// UAS: receives one MESSAGE and answers 200. No keys.
    pub const UAS_MESSAGE: &str = include_str!("../scenarios/uas_message.xml");
    /// UAS: answers one MESSAGE `401 Unauthorized` with a challenge for the realm
    /// `contoso.test` (a federated end naming the caller's home realm), then waits 3 s: a
    /// second MESSAGE of the call (credentials sent to it) fails the run. No keys.
    pub const UAS_MESSAGE_401_HOME_REALM: &str =
        include_str!("../scenarios/uas_message_401_home_realm.xml");
    /// UAC: sends one MESSAGE and expects 200. Keys: `to_user`, `to_domain`, `from_user`,
    /// `from_domain`.
    pub const UAC_MESSAGE: &str = include_str!("../scenarios/uac_message.xml");
    /// UAC: REGISTER, answers the 401 with `[authentication]` (set
    /// [`Sipp::auth`](super::Sipp::auth)), expects 200. Keys: `user`, `domain`, `contact`
    /// (a `sip:` URI without angle brackets), `expires`.
    pub const UAC_REGISTER_AUTH: &str = include_str!("../scenarios/uac_register_auth.xml");
    /// UAC: an instant-messaging session: INVITE with SDP `m=message 5060 sip null`
    /// (`a=accept-types:text/plain`), ACK for the 200, a pause of `-d MS` (pass
    /// `.arg("-d").arg("3000")`; SIPp's default is 0), then BYE in the dialog (Record-Route
    /// followed), expecting 200. Keys: `to_user`, `to_domain`, `from_user`, `from_domain`.
    pub const UAC_IM_INVITE_BYE: &str = include_str!("../scenarios/uac_im_invite_bye.xml");
    /// UAS: an instant-messaging call: the INVITE must offer an IM session (`m=message …
    /// null` with `text/plain` among its accept-types); answered 200 with
    /// `m=message 5060 sip null` / `a=accept-types:text/plain`; then every MESSAGE in the
    /// dialog (it must be `text/plain`) is answered 200 until the caller's BYE, answered
    /// 200. Count the MESSAGEs from the trace ([`Sipp::trace_messages`](super::Sipp::trace_messages)).
    /// The caller must keep one request outstanding at a time (each MESSAGE, and the BYE,
    /// only once the previous 200 is in): SIPp answers one request of a call at a time.
    /// Keys: `user` (for its Contact).
    pub const UAS_IM_SESSION: &str = include_str!("../scenarios/uas_im_session.xml");
    /// UAC: an instant-messaging call: INVITE with an IM session offer, ACK for the 200
    /// (whose answer must have an IM session), `messages` MESSAGEs in the dialog (`text/plain`,
    /// `message <CSeq> from <from_user>`) each expecting 200, then BYE expecting 200. Keys:
    /// `to_user`, `to_domain`, `from_user`, `from_domain`; pass `.arg("-set")
    /// .arg("messages").arg("N")` (N ≥ 1).
    pub const UAC_IM_SESSION: &str = include_str!("../scenarios/uac_im_session.xml");
    /// UAC: an instant-messaging call with a delayed offer (RFC 3261 §13.2.1): INVITE
    /// without a body; the 200 must carry an SDP offer with an IM session (`text/plain`
    /// among its accept-types); the ACK answers it (`m=message 5060 sip null`,
    /// `a=accept-types:text/plain`); then one MESSAGE from the callee (it must be
    /// `text/plain`) answered 200, one MESSAGE (`text/plain`, `hello from <from_user>`)
    /// expecting 200, and BYE expecting 200: the callee speaks first. Keys: `to_user`,
    /// `to_domain`, `from_user`, `from_domain`.
    pub const UAC_IM_DELAYED_OFFER: &str = include_str!("../scenarios/uac_im_delayed_offer.xml");
    /// UAC: as [`UAC_IM_DELAYED_OFFER`] up to the 200 (which must carry an IM offer), then
    /// an ACK without a usable answer — no body with `.arg("-set").arg("rejecting")
    /// .arg("0")`, the IM session rejected (`m=message 0 sip null`) with `1` — and the
    /// callee's BYE, expected and answered 200. Keys: as [`UAC_IM_DELAYED_OFFER`].
    pub const UAC_IM_DELAYED_OFFER_BAD_ACK: &str =
        include_str!("../scenarios/uac_im_delayed_offer_bad_ack.xml");
    /// UAC: an instant-messaging call with an offer (INVITE, 200, ACK), then a re-INVITE
    /// without one (RFC 3261 §14.2): its 200 must carry an IM offer (`text/plain` among
    /// its accept-types), and the ACK answers it as `.arg("-set").arg("answer").arg("N")`
    /// says: `0` a usable answer, then one MESSAGE (`after the re-INVITE`) expecting 200
    /// and BYE expecting 200; `1` no body, `2` the IM session rejected
    /// (`m=message 0 sip null`), `3` a body that is not SDP, each then expecting the
    /// callee's BYE, answered 200. Keys: `to_user`, `to_domain`, `from_user`,
    /// `from_domain`.
    pub const UAC_IM_REINVITE: &str = include_str!("../scenarios/uac_im_reinvite.xml");
    /// UAC: as [`UAC_IM_REINVITE`] up to the re-INVITE's 200 (with an IM offer); before
    /// its ACK, a re-INVITE with an offer expecting 491 (ACKed) and an UPDATE with an
    /// offer expecting 491; then the ACK with a usable answer, one MESSAGE (`after the
    /// refused offers`) expecting 200 and BYE expecting 200. Keys: as [`UAC_IM_REINVITE`].
    pub const UAC_IM_REINVITE_OVERLAP: &str =
        include_str!("../scenarios/uac_im_reinvite_overlap.xml");
    /// UAS: as [`UAS_IM_SESSION`] without messages (INVITE, 200, ACK, the caller's BYE), but
    /// the run fails unless the INVITE's From is `<sip:ceo@contoso.test>` with no display
    /// name and no P-Asserted-Identity arrived (impersonation toward a federated party).
    /// Keys: `user`.
    pub const UAS_IM_FROM_CEO_URI_ONLY: &str =
        include_str!("../scenarios/uas_im_from_ceo_uri_only.xml");
    /// UAS: as [`UAS_IM_FROM_CEO_URI_ONLY`], but the run fails unless From is
    /// `"The CEO" <sip:ceo@contoso.test>` and a P-Asserted-Identity with the same value
    /// arrived (impersonation toward a home user). Keys: `user`.
    pub const UAS_IM_FROM_CEO_WITH_PAI: &str =
        include_str!("../scenarios/uas_im_from_ceo_with_pai.xml");
    /// UAS: answers an IM INVITE 486 Busy Here and takes its ACK. No keys.
    pub const UAS_IM_BUSY: &str = include_str!("../scenarios/uas_im_busy.xml");
    /// UAS: answers an IM INVITE 180 Ringing and never answers it; expects a CANCEL,
    /// answers it 200 and the INVITE 487, and takes the ACK. No keys.
    pub const UAS_IM_RINGING_CANCEL: &str = include_str!("../scenarios/uas_im_ringing_cancel.xml");
    /// UAS: takes an IM call (200, ACK), sends BYE itself (expects 200), then one more
    /// MESSAGE in the ended dialog, expecting 481. Keys: `user`.
    pub const UAS_IM_PEER_BYE: &str = include_str!("../scenarios/uas_im_peer_bye.xml");
    /// UAS: takes an IM call (200, ACK), answers 200 to `before_bye` MESSAGEs and hangs up
    /// while the next is in flight: that MESSAGE is held, BYE is sent, and after the BYE's
    /// 200 the held MESSAGE is answered 481, as is every later one; the run ends 2 s after
    /// the last. SIPp takes one message of a call at a time, so the caller must keep one
    /// MESSAGE outstanding at a time (a pipelined request aborts SIPp's call). Keys: `user`;
    /// pass `.arg("-set").arg("before_bye").arg("N")` (N ≥ 0).
    pub const UAS_IM_BYE_AMID_MESSAGES: &str =
        include_str!("../scenarios/uas_im_bye_amid_messages.xml");
}

/// SIPp's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SippTransport {
    /// TCP, one socket (`-t t1`). The front ends listen on TCP.
    Tcp,
    /// UDP, one socket (`-t u1`). The front ends have no UDP listener: for SIPp to SIPp.
    Udp,
}

/// One SIPp run to make: scenario, addresses, counts, keys, and a global time limit that
/// bounds the run (`-timeout`, default 20 s).
#[derive(Debug, Clone)]
pub struct Sipp {
    dir: PathBuf,
    name: String,
    scenario: String,
    transport: SippTransport,
    remote: Option<SocketAddr>,
    local_port: Option<u16>,
    calls: Option<u64>,
    rate: Option<f64>,
    limit: Option<u64>,
    keys: Vec<(String, String)>,
    auth: Option<(String, String)>,
    timeout: Duration,
    trace_messages: bool,
    extra: Vec<String>,
    binary: Option<PathBuf>,
}

/// What a finished run returns.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// SIPp's exit status (0 only if every call succeeded).
    pub status: ExitStatus,
    /// The last line of the statistics file.
    pub stats: SippStats,
    /// The end of SIPp's screen output.
    pub screen_tail: String,
    /// The unexpected-message log (`-trace_err`), if any.
    pub errors: String,
    /// The message log, if [`Sipp::trace_messages`] was set.
    pub messages: String,
}

impl SippOutcome {
    /// Exit 0, at least one successful call and no failed call.
    pub fn succeeded(&self) -> bool {
        self.status.success() && self.stats.successful_calls > 0 && self.stats.failed_calls == 0
    }

    /// A multi-line description for assertion messages.
    pub fn report(&self) -> String {
        format!(
            "status {}; successful {} failed {} created {}\n--- errors ---\n{}\n--- screen ---\n{}",
            self.status,
            self.stats.successful_calls,
            self.stats.failed_calls,
            self.stats.created_calls,
            self.errors,
            self.screen_tail
        )
    }
}

/// SIPp's cumulative statistics at the end of a run (`-trace_stat`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SippStats {
    /// `SuccessfulCall(C)`.
    pub successful_calls: u64,
    /// `FailedCall(C)`.
    pub failed_calls: u64,
    /// `TotalCallCreated`.
    pub created_calls: u64,
    /// Every column of the last line, by name.
    pub fields: BTreeMap<String, String>,
}

impl SippStats {
    /// Parses a statistics file (`;`-separated, header line first) and keeps the last line.
    pub fn parse(csv: &str) -> SippStats {
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return SippStats::default();
        };
        let Some(last) = lines.next_back() else {
            return SippStats::default();
        };
        let fields: BTreeMap<String, String> = header
            .split(';')
            .zip(last.split(';'))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let num = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        SippStats {
            successful_calls: num("SuccessfulCall(C)"),
            failed_calls: num("FailedCall(C)"),
            created_calls: num("TotalCallCreated"),
            fields,
        }
    }
}

impl Sipp {
    /// A run named `name` (file names) of `scenario_xml`, files in `dir`. Defaults: TCP,
    /// local port chosen at run time, no call limit, 20 s global timeout.
    pub fn new(dir: &Path, name: &str, scenario_xml: &str) -> Sipp {
        Sipp {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            scenario: scenario_xml.to_owned(),
            transport: SippTransport::Tcp,
            remote: None,
            local_port: None,
            calls: None,
            rate: None,
            limit: None,
            keys: Vec::new(),
            auth: None,
            timeout: Duration::from_secs(20),
            trace_messages: false,
            extra: Vec::new(),
            binary: None,
        }
    }

    /// TCP or UDP.
    pub fn transport(mut self, t: SippTransport) -> Self {
        self.transport = t;
        self
    }

    /// Where a UAC sends (the front end's TCP address, for example).
    pub fn remote(mut self, addr: SocketAddr) -> Self {
        self.remote = Some(addr);
        self
    }

    /// The local port (`-p`); default: one chosen at run time.
    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    /// Stop after this many calls (`-m`).
    pub fn calls(mut self, n: u64) -> Self {
        self.calls = Some(n);
        self
    }

    /// Calls per second (`-r`, with `-rp 1000`).
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// Most outstanding calls (`-l`).
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Sets `[name]` in the scenario (`-key`). SIPp keeps the first of repeated keys, so a
    /// later call with the same name replaces the earlier value here.
    pub fn key(mut self, name: &str, value: &str) -> Self {
        self.keys.retain(|(k, _)| k != name);
        self.keys.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Credentials for `[authentication]` (`-au`, `-ap`).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Global time limit (`-timeout`, with `-timeout_error`); the harness also kills SIPp a
    /// few seconds after it.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Logs every message sent and received ([`SippOutcome::messages`]).
    pub fn trace_messages(mut self, on: bool) -> Self {
        self.trace_messages = on;
        self
    }

    /// More command-line arguments, appended as given.
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_owned());
        self
    }

    /// The SIPp binary (default: `$PEER_HARNESS_SIPP`, then `PATH`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts SIPp in the background; [`SippProcess::wait`] collects the outcome.
    pub fn spawn(self) -> Result<SippProcess> {
        use std::os::unix::process::CommandExt;
        let binary = match &self.binary {
            Some(p) => crate::process::check_binary(p)?,
            None => find_binary("sipp", "PEER_HARNESS_SIPP")?,
        };
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| HarnessError::io(format!("creating {}", self.dir.display()), e))?;
        let base = self.dir.join(&self.name);
        let path = |ext: &str| PathBuf::from(format!("{}.{ext}", base.display()));
        let scenario = path("xml");
        std::fs::write(&scenario, &self.scenario)
            .map_err(|e| HarnessError::io(format!("writing {}", scenario.display()), e))?;
        let local_port = match self.local_port {
            Some(p) => p,
            None => free_tcp_ports(1)?[0],
        };
        let (stats, errors, messages, screen) = (
            path("stat.csv"),
            path("errors.log"),
            path("messages.log"),
            path("screen.log"),
        );
        for f in [&stats, &errors, &messages] {
            let _ = std::fs::remove_file(f);
        }
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |a: &dyn AsRef<std::ffi::OsStr>| args.push(a.as_ref().to_owned());
        push(&"-sf");
        push(&scenario);
        push(&"-i");
        push(&"127.0.0.1");
        push(&"-p");
        push(&local_port.to_string());
        push(&"-t");
        push(&match self.transport {
            SippTransport::Tcp => "t1",
            SippTransport::Udp => "u1",
        });
        push(&"-nostdin");
        push(&"-timeout");
        push(&format!("{}s", self.timeout.as_secs().max(1)));
        push(&"-timeout_error");
        push(&"-trace_stat");
        push(&"-stf");
        push(&stats);
        push(&"-fd");
        push(&"1");
        push(&"-trace_err");
        push(&"-error_file");
        push(&errors);
        if self.trace_messages {
            push(&"-trace_msg");
            push(&"-message_file");
            push(&messages);
        }
        if let Some(n) = self.calls {
            push(&"-m");
            push(&n.to_string());
        }
        if let Some(r) = self.rate {
            push(&"-r");
            push(&format!("{r}"));
            push(&"-rp");
            push(&"1000");
        }
        if let Some(l) = self.limit {
            push(&"-l");
            push(&l.to_string());
        }
        for (k, v) in &self.keys {
            push(&"-key");
            push(k);
            push(v);
        }
        if let Some((u, p)) = &self.auth {
            push(&"-au");
            push(u);
            push(&"-ap");
            push(p);
        }
        for a in &self.extra {
            push(a);
        }
        if let Some(r) = self.remote {
            push(&r.to_string());
        }
        let out = File::create(&screen)
            .map_err(|e| HarnessError::io(format!("creating {}", screen.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating a file", e))?;
        let child = Command::new(&binary)
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", binary.display()), e))?;
        Ok(SippProcess {
            pid: child.id(),
            child: Some(child),
            name: self.name,
            local: loopback(local_port),
            deadline: Instant::now() + self.timeout + Duration::from_secs(5),
            timeout: self.timeout + Duration::from_secs(5),
            stats,
            errors,
            messages,
            screen,
        })
    }

    /// Starts SIPp as a TCP UAS and waits until it listens ([`SippProcess::wait_listening`]).
    /// When the port chosen at run time was taken before SIPp could bind it, starts again
    /// on another (three tries); a port set with [`local_port`](Self::local_port) is not
    /// changed. A TCP UAC listens on its port as well, so this starts one that runs in
    /// the background (one that is still running once it listens) the same way.
    pub fn spawn_listening(self, timeout: Duration) -> Result<SippProcess> {
        self.on_a_free_port(|run| {
            let mut sipp = run.spawn()?;
            sipp.wait_listening(timeout)?;
            Ok(sipp)
        })
    }

    /// `attempt` with a copy of this run; again (three tries in all) while it fails with
    /// [`HarnessError::PortInUse`] and the port is one chosen at run time (each spawn
    /// chooses anew).
    fn on_a_free_port<T>(&self, attempt: impl Fn(Sipp) -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt(self.clone()) {
                Err(HarnessError::PortInUse { .. }) if self.local_port.is_none() && tries < 3 => {}
                other => return other,
            }
        }
    }

    /// Runs SIPp to the end (bounded by the timeout) and returns the outcome. When the
    /// port chosen at run time was taken before SIPp could bind it, runs again on another
    /// (three tries).
    pub fn run(self) -> Result<SippOutcome> {
        self.on_a_free_port(|run| run.spawn()?.wait())
    }
}

/// A running SIPp. Dropping it kills SIPp if it still runs.
#[derive(Debug)]
pub struct SippProcess {
    pid: u32,
    child: Option<Child>,
    name: String,
    local: SocketAddr,
    deadline: Instant,
    timeout: Duration,
    stats: PathBuf,
    errors: PathBuf,
    messages: PathBuf,
    screen: PathBuf,
}

impl SippProcess {
    /// SIPp's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIPp's local address (where a UAS listens, what a registration's contact points to).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// For a TCP UAS: waits until SIPp itself listens on its port (checked in
    /// `/proc/net/tcp` and SIPp's open files, without connecting), or fails if SIPp exits
    /// first: [`HarnessError::PortInUse`] when another process took the port.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = self.child.as_mut() else {
                return Err(HarnessError::Unexpected("SIPp already waited for".into()));
            };
            if let Ok(Some(status)) = c.try_wait() {
                if bind_failed(&std::fs::read_to_string(&self.screen).unwrap_or_default()) {
                    return Err(HarnessError::PortInUse {
                        name: format!("sipp {}", self.name),
                    });
                }
                return Err(HarnessError::Exited {
                    name: format!("sipp {}", self.name),
                    status: status.to_string(),
                    log_path: self.screen.clone(),
                    log_tail: crate::process::tail(&self.screen, 30),
                });
            }
            if listens_on(c.id(), self.local.port()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("sipp {} listening on {}", self.name, self.local),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for SIPp to end (it ends by itself at its `-timeout`; a SIPp still running five
    /// seconds later is killed and reported as [`HarnessError::Timeout`]).
    pub fn wait(mut self) -> Result<SippOutcome> {
        let Some(mut child) = self.child.take() else {
            return Err(HarnessError::Unexpected("SIPp already waited for".into()));
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => return Err(HarnessError::io("waiting for SIPp", e)),
            }
            if Instant::now() >= self.deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Timeout {
                    what: format!(
                        "sipp {} to finish\n--- screen ---\n{}",
                        self.name,
                        crate::process::tail(&self.screen, 30)
                    ),
                    waited: self.timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        if bind_failed(&read(&self.screen)) {
            return Err(HarnessError::PortInUse {
                name: format!("sipp {}", self.name),
            });
        }
        Ok(SippOutcome {
            status,
            stats: SippStats::parse(&read(&self.stats)),
            screen_tail: crate::process::tail(&self.screen, 40),
            errors: read(&self.errors),
            messages: read(&self.messages),
        })
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether SIPp's screen output says it could not bind its local port (it exits at once).
fn bind_failed(screen: &str) -> bool {
    screen.contains("Unable to bind main socket") && screen.contains("Address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_last_line() {
        let csv = "StartTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);\n\
                   a;0;0;0;\n\
                   b;5;4;1;\n";
        let s = SippStats::parse(csv);
        assert_eq!(s.created_calls, 5);
        assert_eq!(s.successful_calls, 4);
        assert_eq!(s.failed_calls, 1);
        assert_eq!(s.fields["StartTime"], "b");
    }
}
