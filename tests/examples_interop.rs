//! The `echo_bot` and `notify` examples as a user runs them, against the real front ends
//! of peer-harness: the bot registers at contoso; `notify` from contoso (a home user's
//! view) and from fabrikam (across federation) sends it a message each; the bot echoes
//! with the sender's homing. A target that does not exist is reported as failed.
//!
//! The example binaries come from the same `cargo test --all-targets` build (they sit in
//! `target/debug/examples`); when missing (a test run without `--all-targets`) they are
//! built into a separate target directory, so no cargo lock is shared with this run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use peer_harness::{Deployment, Federation};

const WAIT: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe.parent().and_then(Path::parent).expect("target/debug");
    let built = debug.join("examples").join(name);
    if built.exists() {
        return built;
    }
    let target = debug.join("examples-interop-target");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --example");
    assert!(status.success(), "building example {name}");
    target.join("debug").join("examples").join(name)
}

/// The flags of `examples/common` for an application of `d`.
fn flags(fed: &Federation, d: Deployment, user: &str) -> Vec<String> {
    let fe = fed.front_end(d);
    let app = fed.pki().application(d);
    vec![
        "--proxy".into(),
        fe.mtls_addr().to_string(),
        "--proxy-name".into(),
        d.fqdn().into(),
        "--cert".into(),
        app.cert_path.display().to_string(),
        "--key".into(),
        app.key_path.display().to_string(),
        "--ca".into(),
        fed.pki().ca_path().display().to_string(),
        "--uri".into(),
        format!("sip:{user}@{}", d.domain()),
        "--home-domain".into(),
        d.domain().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]
}

/// A running echo bot whose output lines arrive on a channel.
struct Bot {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Bot {
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "echo_bot never printed {needle:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bot(fed: &Federation) -> Bot {
    let mut child = Command::new(example("echo_bot"))
        .args(flags(fed, Deployment::Contoso, "echo"))
        .arg("--register")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("echo_bot starts");
    let (tx, lines) = mpsc::channel();
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    Bot {
        child,
        lines,
        seen: Vec::new(),
    }
}

/// Runs `notify` from deployment `d` and returns (exit code, stdout lines).
fn notify(fed: &Federation, d: Deployment, text: &str, targets: &[&str]) -> (i32, Vec<String>) {
    let mut cmd = Command::new(example("notify"));
    cmd.args(flags(fed, d, "notify"))
        .args(["--message", text])
        .args(targets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("notify starts");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(WAIT)
        .expect("notify finished within the wait")
        .expect("notify output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        stdout.lines().map(str::to_string).collect(),
    )
}

#[test]
fn echo_bot_answers_home_and_federated_senders_and_notify_reports_each_outcome() {
    let fed = Federation::start().unwrap_or_else(|e| panic!("starting the real peers: {e}"));
    let mut bot = start_bot(&fed);
    bot.wait_for("echo bot ready");

    // From contoso: one target that exists, one that does not.
    let (code, lines) = notify(
        &fed,
        Deployment::Contoso,
        "hello from home",
        &["sip:echo@contoso.test", "sip:nobody@contoso.test"],
    );
    assert_eq!(code, 1, "one target failed: {lines:?}");
    assert_eq!(lines.len(), 2, "one line per target: {lines:?}");
    assert!(
        lines[0].starts_with("sip:echo@contoso.test\ton-premises\tdelivered (InCall)"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("sip:nobody@contoso.test\ton-premises\tfailed:")
            && lines[1].contains("404"),
        "{lines:?}"
    );
    let seen = bot.wait_for("[on-premises] hello from home");
    assert!(seen.contains("sip:notify@contoso.test"), "{seen}");

    // From fabrikam, through the federation route: the bot sees a federated sender.
    let (code, lines) = notify(
        &fed,
        Deployment::Fabrikam,
        "hello across federation",
        &["sip:echo@contoso.test"],
    );
    assert_eq!(code, 0, "{lines:?}\n{}", fed.log_tails(30));
    assert!(
        lines[0].starts_with("sip:echo@contoso.test\tfederated\tdelivered (InCall)"),
        "{lines:?}"
    );
    let seen = bot.wait_for("[federated] hello across federation");
    assert!(seen.contains("sip:notify@fabrikam.test"), "{seen}");
}
