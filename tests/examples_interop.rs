//! The `echo_bot` and `notify` examples as a user runs them, against the real front ends
//! of peer-harness: the bot registers at contoso; `notify` from contoso (a home user's
//! view) and from fabrikam (across federation) sends it a message each; the bot echoes
//! with the sender's homing. A target that does not exist is reported as failed. `ping`
//! reaches the bot through the front end; on Ctrl-C (SIGINT) the bot hangs up the
//! conversation still open, unregisters and exits 0. Without any server: `quickstart` runs
//! to the end and exits 0, and the examples answer bad arguments with a message naming the
//! flag, not a panic.
//!
//! The example binaries come from the same `cargo test --all-targets` build (they sit in
//! `target/debug/examples`); when missing (a test run without `--all-targets`) they are
//! built into a separate target directory, so no cargo lock is shared with this run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use interop_support::{federation, identity, loopback0, roots, runtime};
use peer_harness::{Deployment, Federation};
use ucma::prelude::*;

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

impl Bot {
    /// Sends SIGINT (what Ctrl-C sends) and waits for the bot to exit.
    fn interrupt(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success(), "kill -INT {}", self.child.id());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("echo_bot status") {
                // Whatever it printed on its way out.
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "echo_bot still running {WAIT:?} after SIGINT; it printed:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
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

/// Runs example `name` with `args` to its end (within the wait).
fn run(name: &str, args: &[String]) -> Output {
    let child = Command::new(example(name))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{name} {args:?} did not finish within {WAIT:?}"))
        .expect("example output")
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
    let fed = federation();
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

    // ping, through the front end to the bot's platform, which answers OPTIONS.
    let mut args = flags(&fed, Deployment::Contoso, "ping");
    args.push("sip:echo@contoso.test".into());
    let out = run("ping", &args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("SIP/2.0 200 "), "{stdout}{stderr}");

    // A conversation still open when the bot is stopped: the bot hangs it up (BYE) before
    // it exits, rather than leave the other side in a call nobody answers.
    let rt = runtime();
    let (platform, carol, call, mut flow) = rt.block_on(open_call_to_the_bot(&fed));
    let status = bot.interrupt();
    rt.block_on(async {
        let end = tokio::time::timeout(WAIT, flow.recv()).await;
        assert!(
            matches!(end, Ok(None)),
            "the bot's SIGINT did not end the conversation: {end:?}"
        );
        assert!(
            matches!(
                call.termination_reason(),
                Some(TerminationReason::Remote { .. })
            ),
            "{:?}",
            call.termination_reason()
        );
        carol.terminate().await;
        platform.shutdown().await;
    });
    assert!(
        status.success(),
        "echo_bot exited {status} on SIGINT; it printed:\n{}",
        bot.seen.join("\n")
    );
    bot.wait_for("hung up");
    bot.wait_for("stopped");
}

/// From fabrikam, an application endpoint `sip:carol@fabrikam.test` with an IM call to the
/// bot, one message echoed.
async fn open_call_to_the_bot(
    fed: &Federation,
) -> (
    CollaborationPlatform,
    ApplicationEndpoint,
    InstantMessagingCall<Federated>,
    InstantMessagingFlow,
) {
    let d = Deployment::Fabrikam;
    let app = fed.pki().application(d);
    let settings = ServerPlatformSettings::new(
        "ucma-rs examples interop",
        d.application(),
        identity(app),
        roots(fed),
        OutboundProxy::tls(fed.front_end(d).mtls_addr(), d.fqdn()),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([d.domain()]));
    let platform = CollaborationPlatform::start(settings)
        .await
        .expect("fabrikam platform");
    let carol = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(
            Address::assume_on_premises("sip:carol@fabrikam.test").expect("address"),
        ),
    );
    carol.establish().await.expect("carol established");
    let Homed::Federated(bot) = platform
        .topology()
        .classify("sip:echo@contoso.test")
        .expect("bot address")
    else {
        panic!("the bot is federated as fabrikam sees it");
    };
    let call = Conversation::new(&carol, bot).instant_messaging_call();
    let mut flow = tokio::time::timeout(WAIT, call.establish())
        .await
        .expect("IM call answered in time")
        .expect("IM call to the bot");
    flow.send_text("still there?").await.expect("delivered");
    let echo = tokio::time::timeout(WAIT, flow.recv())
        .await
        .expect("echo in time")
        .expect("an echo");
    assert_eq!(echo.text(), "[federated] still there?");
    (platform, carol, call, flow)
}

#[test]
fn quickstart_runs_without_a_server_and_exits_0() {
    let out = run("quickstart", &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}\n{stdout}{stderr}", out.status);
    for line in [
        "bot got: [on-premises] Hello Alice",
        "bot got: [on-premises] Bye for now",
        "alice echoed 3 messages",
        "SIP ladder",
        "BYE",
        "SVG ladder written to",
        "ms  total",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}{stderr}");
    }
}

/// Bad arguments are answered with a message naming the flag and exit code 2, never a
/// panic; no server is needed to see it.
#[test]
fn examples_name_the_bad_flag_and_exit_2() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let missing = dir.path().join("missing.pem").display().to_string();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let not_pem = not_pem.display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        ["--proxy", "127.0.0.1:9", "--uri", "sip:bot@contoso.test"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "ping",
            args(&[
                "--cert",
                &missing,
                "--key",
                &missing,
                "--ca",
                &missing,
                "sip:a@contoso.test",
            ]),
            format!("--cert {missing}: "),
        ),
        (
            "ping",
            args(&[
                "--cert",
                &not_pem,
                "--key",
                &not_pem,
                "--ca",
                &not_pem,
                "sip:a@contoso.test",
            ]),
            format!("--cert {not_pem} / --key {not_pem}: "),
        ),
        (
            "notify",
            args(&[
                "--tcp",
                "--listen",
                "127.0.0.1:0",
                "--message",
                "hi",
                "sip:a@contoso.test",
            ]),
            "--listen 127.0.0.1:0 with --tcp needs --cert and --key".into(),
        ),
        (
            "echo_bot",
            args(&["--tcp", "--cert", &missing]),
            "--cert needs --key".into(),
        ),
        ("ping", args(&["--bogus"]), "unknown flag --bogus".into()),
        (
            "ping",
            args(&["--tcp", "--listen", "nowhere", "sip:a@contoso.test"]),
            "--listen nowhere: ".into(),
        ),
    ];
    for (name, args, expected) in cases {
        let out = run(name, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(
            stderr.contains(&expected) && !stderr.contains("panicked"),
            "{name} {args:?}: expected {expected:?} in:\n{stderr}"
        );
    }
}
