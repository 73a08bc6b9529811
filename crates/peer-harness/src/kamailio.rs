//! Kamailio 5.6 front ends: configuration written from the module documentation, one
//! process group per instance, readiness by OPTIONS, stop on drop.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sip_core::SipMessage;

use crate::client::{status_line, SipTcpClient};
use crate::error::{HarnessError, Result, INSTALL_HINT};
use crate::process::{listens_on, loopback, processes_in_group, tail, Supervised};
use crate::Deployment;

/// Ports of one instance, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ports {
    pub tcp: u16,
    pub mtls: u16,
    pub user_tls: Option<u16>,
    pub ctl: u16,
}

/// Everything a configuration depends on.
#[derive(Debug, Clone)]
pub(crate) struct FrontEndConfig {
    pub deployment: Deployment,
    pub ports: Ports,
    /// The other deployment's mutual-TLS port (federation target).
    pub partner_mtls: u16,
    /// Certificate names whose requests are trusted applications.
    pub trusted_applications: Vec<String>,
    /// Certificate names of federation partners (the other front end).
    pub partners: Vec<String>,
    /// Users who may register with a password: (user, password).
    pub users: Vec<(String, String)>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub debug: i32,
    /// Whether users' requests other than REGISTER (out of dialog) are challenged with 407
    /// (`proxy_challenge` / `pv_proxy_authenticate`), as a proxy that authenticates every
    /// request of its users does.
    pub challenge_user_requests: bool,
    /// Whether users' requests inside dialogs (not ACK) are challenged with 407 too.
    pub challenge_in_dialog_requests: bool,
    /// Passwords the proxy checks instead of the registrar's, per user: (user, password).
    pub proxy_passwords: Vec<(String, String)>,
}

/// Quotes a string for a Kamailio config string literal.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `($var(x) == "a" || $var(x) == "b")`, or `0` (false) for an empty list.
fn any_of(var: &str, names: &[String]) -> String {
    if names.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = names.iter().map(|n| format!("{var} == {}", q(n))).collect();
    format!("({})", parts.join(" || "))
}

impl FrontEndConfig {
    /// The TLS module configuration (profiles: the mutual listener is the default server
    /// profile; the optional user listener does not ask for a certificate; the client
    /// profile presents the front end's certificate to partners).
    pub(crate) fn tls_cfg(&self) -> String {
        let (cert, key, ca) = (self.cert.display(), self.key.display(), self.ca.display());
        let mut s = format!(
            "# peer-harness: TLS profiles of {fqdn}\n\
             [server:default]\n\
             method = TLSv1.2+\n\
             verify_certificate = yes\n\
             require_certificate = yes\n\
             certificate = {cert}\n\
             private_key = {key}\n\
             ca_list = {ca}\n\
             verify_depth = 3\n\n\
             [client:default]\n\
             method = TLSv1.2+\n\
             verify_certificate = yes\n\
             require_certificate = yes\n\
             certificate = {cert}\n\
             private_key = {key}\n\
             ca_list = {ca}\n\
             verify_depth = 3\n",
            fqdn = self.deployment.fqdn()
        );
        if let Some(p) = self.ports.user_tls {
            let _ = write!(
                s,
                "\n[server:127.0.0.1:{p}]\n\
                 method = TLSv1.2+\n\
                 verify_certificate = no\n\
                 require_certificate = no\n\
                 certificate = {cert}\n\
                 private_key = {key}\n\
                 ca_list = {ca}\n"
            );
        }
        s
    }

    /// The main configuration. `tls_cfg_path` is where [`tls_cfg`](Self::tls_cfg) was written.
    pub(crate) fn kamailio_cfg(&self, tls_cfg_path: &Path) -> String {
        let d = self.deployment;
        let other = d.other();
        let p = self.ports;
        let mut listen = format!(
            "listen=tcp:127.0.0.1:{}\nlisten=tls:127.0.0.1:{}\n",
            p.tcp, p.mtls
        );
        if let Some(u) = p.user_tls {
            let _ = writeln!(listen, "listen=tls:127.0.0.1:{u}");
        }
        let passwords = self.password_table("$au", &[]);
        let check_user_requests = if self.challenge_user_requests {
            "\n\t# Users' requests (not REGISTER) are challenged as by a proxy (407).\n\
             \tif ($var(trust) == \"none\" && !is_method(\"REGISTER\")) {\n\
             \t\troute(PROXYAUTH);\n\
             \t}\n"
        } else {
            ""
        };
        let check_in_dialog_requests = if self.challenge_in_dialog_requests {
            "\t# Users' requests inside dialogs (not ACK) are challenged too (407).\n\
             \tif ($var(trust) == \"none\" && !is_method(\"ACK\")) {\n\
             \t\troute(PROXYAUTH);\n\
             \t}\n"
        } else {
            ""
        };
        let proxy_auth_route = if self.challenge_user_requests || self.challenge_in_dialog_requests
        {
            self.proxy_auth_route()
        } else {
            String::new()
        };
        let trusted_cn = any_of("$var(cn)", &self.trusted_applications);
        let trusted_san = any_of("$var(san)", &self.trusted_applications);
        let partner_cn = any_of("$var(cn)", &self.partners);
        let partner_san = any_of("$var(san)", &self.partners);
        format!(
            r##"#!KAMAILIO
# Generated by peer-harness: front end of {domain} ({fqdn}).
# Listeners: TCP {tcp} (users, SIPp), TLS {mtls} (mutual TLS: applications and federation
# partners), {user_tls_note}; control socket tcp:127.0.0.1:{ctl}.

debug={debug}
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=no
enable_tls=yes
tcp_accept_no_cl=no
tcp_connection_lifetime=3605
tcp_max_connections=8192
tls_max_connections=8192
server_header="Server: peer-harness kamailio {fqdn}"
user_agent_header="User-Agent: peer-harness kamailio {fqdn}"
alias={fqdn_q}
alias={domain_q}
{listen}
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
loadmodule "tls.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"

modparam("tls", "config", "{tls_cfg}")
modparam("ctl", "binrpc", "tcp:127.0.0.1:{ctl}")
modparam("tm", "fr_timer", 8000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "append_fromtag", 1)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "default_expires", 600)
modparam("registrar", "min_expires", 10)
modparam("registrar", "max_expires", 3600)
modparam("auth", "nonce_expire", 60)
modparam("presence", "subs_db_mode", 0)
modparam("presence", "publ_cache", 2)
modparam("presence", "server_address", "sip:{fqdn}@127.0.0.1:{tcp};transport=tcp")
modparam("presence_xml", "force_active", 1)

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}

	# Who is this? $var persists between messages in a process: reset it every time.
	$var(trust) = "none";
	if ($Rp == {mtls}) {{
		# Mutual TLS: the handshake already required a certificate from the test CA;
		# its name decides whether it is a trusted application or a federation partner.
		if (!is_peer_verified()) {{
			sl_send_reply("403", "Forbidden (certificate not verified)");
			exit;
		}}
		$var(cn) = $tls_peer_subject_cn;
		$var(san) = $tls_peer_san_hostname;
		if ({trusted_cn} || {trusted_san}) {{
			$var(trust) = "application";
		}} else if ({partner_cn} || {partner_san}) {{
			$var(trust) = "partner";
		}} else {{
			xlog("L_NOTICE", "refused untrusted certificate cn=$var(cn) from $si:$sp\n");
			sl_send_reply("403", "Forbidden (untrusted certificate)");
			exit;
		}}
	}}

	# The front end itself: readiness and keep-alive probes.
	if (is_method("OPTIONS") && $rU == $null && ($rd == "{fqdn}" || $rd == "{domain}" || $rd == "127.0.0.1")) {{
		append_to_reply("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH\r\n");
		sl_send_reply("200", "OK");
		exit;
	}}

	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			route(RELAY);
		}}
		exit;
	}}

	if (has_totag()) {{
		route(WITHINDLG);
		exit;
	}}

	if (!is_method("ACK")) {{
		# Absorb retransmissions of transactions in progress.
		t_check_trans();
	}}

{check_user_requests}
	if ($rd == "{other_domain}" || $rd == "{other_fqdn}") {{
		route(FEDERATION);
		exit;
	}}

	if ($rd != "{domain}" && $rd != "{fqdn}" && $rd != "127.0.0.1") {{
		sl_send_reply("404", "Domain Not Served");
		exit;
	}}

	if (is_method("REGISTER")) {{
		route(REGISTRAR);
		exit;
	}}

	if (is_method("PUBLISH|SUBSCRIBE")) {{
		route(PRESENCE);
		exit;
	}}

	if ($rU == $null) {{
		sl_send_reply("484", "Address Incomplete");
		exit;
	}}

	if (!lookup("location")) {{
		xlog("L_NOTICE", "no contact for $ru ($rm from $si:$sp)\n");
		t_newtran();
		t_reply("404", "Not Found");
		exit;
	}}
	route(RELAY);
}}

route[RELAY] {{
	if (is_method("INVITE|SUBSCRIBE")) {{
		record_route();
	}}
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}

route[WITHINDLG] {{
{check_in_dialog_requests}	if (loose_route()) {{
		route(RELAY);
		exit;
	}}
	if (is_method("SUBSCRIBE") && ($rd == "{fqdn}" || $rd == "127.0.0.1" || $rd == "{domain}")) {{
		# Refresh of a subscription held here.
		route(PRESENCE);
		exit;
	}}
	if (is_method("ACK")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	sl_send_reply("404", "Not Here");
	exit;
}}

# Requests for the federated deployment go to its front end over mutual TLS, this front
# end presenting its own certificate. A partner's requests are never relayed onwards.
route[FEDERATION] {{
	if ($var(trust) == "partner") {{
		sl_send_reply("403", "Forbidden (no transit for federation partners)");
		exit;
	}}
	if (is_method("REGISTER")) {{
		sl_send_reply("403", "Forbidden (register at your home deployment)");
		exit;
	}}
	xlog("L_NOTICE", "federation: $rm $ru to {other_domain} via tls:127.0.0.1:{partner_mtls}\n");
	$du = "sip:127.0.0.1:{partner_mtls};transport=tls";
	force_send_socket(tls:127.0.0.1:{mtls});
	route(RELAY);
}}

route[REGISTRAR] {{
	if ($var(trust) == "partner") {{
		sl_send_reply("403", "Forbidden (partners cannot register)");
		exit;
	}}
	# The user "brief" meets a registrar that refuses less than 60 s with 423 Interval Too
	# Brief (RFC 3261 section 10.3, step 7), for the clients' Min-Expires handling.
	if ($tU == "brief" && is_present_hf("Expires") && $(hdr(Expires){{s.int}}) > 0 && $(hdr(Expires){{s.int}}) < 60) {{
		append_to_reply("Min-Expires: 60\r\n");
		sl_send_reply("423", "Interval Too Brief");
		exit;
	}}
	if ($var(trust) != "application") {{
		# Users: digest authentication against the passwords of this configuration.
		if (!is_present_hf("Authorization")) {{
			www_challenge("{domain}", "1");
			exit;
		}}
		$var(password) = "";
		$var(known) = 0;
{passwords}		if ($var(known) != 1) {{
			xlog("L_NOTICE", "unknown user $au\n");
			www_challenge("{domain}", "1");
			exit;
		}}
		if (!pv_www_authenticate("{domain}", "$var(password)", "0")) {{
			xlog("L_NOTICE", "failed digest for $au from $si:$sp\n");
			www_challenge("{domain}", "1");
			exit;
		}}
		if ($au != $tU) {{
			sl_send_reply("403", "Forbidden (auth user does not match To)");
			exit;
		}}
		consume_credentials();
	}}
	if (!save("location")) {{
		sl_reply_error();
	}}
	exit;
}}

route[PRESENCE] {{
	if (!t_newtran()) {{
		sl_reply_error();
		exit;
	}}
	if (is_method("PUBLISH")) {{
		handle_publish();
	}} else {{
		handle_subscribe();
	}}
	t_release();
	exit;
}}
{proxy_auth_route}"##,
            domain = d.domain(),
            fqdn = d.fqdn(),
            domain_q = q(d.domain()),
            fqdn_q = q(d.fqdn()),
            other_domain = other.domain(),
            other_fqdn = other.fqdn(),
            tcp = p.tcp,
            mtls = p.mtls,
            ctl = p.ctl,
            partner_mtls = self.partner_mtls,
            user_tls_note = match p.user_tls {
                Some(u) => format!("TLS {u} (users, no client certificate)"),
                None => "no user TLS listener".into(),
            },
            debug = self.debug,
            tls_cfg = tls_cfg_path.display(),
        )
    }

    /// Config lines that set `$var(password)` (and `$var(known)`) for the user named by
    /// the pseudo-variable `user_var`: each user's password, or its entry in `overrides`.
    fn password_table(&self, user_var: &str, overrides: &[(String, String)]) -> String {
        let mut table = String::new();
        for (user, pw) in &self.users {
            let pw = overrides
                .iter()
                .find(|(u, _)| u == user)
                .map_or(pw, |(_, p)| p);
            let _ = writeln!(
                table,
                "\tif ({user_var} == {}) {{ $var(password) = {}; $var(known) = 1; }}",
                q(user),
                q(pw)
            );
        }
        table
    }

    /// `route[PROXYAUTH]`: a user's request without credentials, or with wrong ones, gets
    /// 407 (qop=auth) for the deployment's realm; the password is the one of the user in
    /// From (the registrar's, unless [`proxy_passwords`](Self::proxy_passwords) says
    /// otherwise). Keyed on the From user rather than `$au`, so the lookup does not depend
    /// on which credentials header Kamailio reads `$au` from for a given method.
    fn proxy_auth_route(&self) -> String {
        let passwords = self.password_table("$fU", &self.proxy_passwords);
        let domain = self.deployment.domain();
        format!(
            r##"
route[PROXYAUTH] {{
	if (!is_present_hf("Proxy-Authorization")) {{
		proxy_challenge("{domain}", "1");
		exit;
	}}
	$var(password) = "";
	$var(known) = 0;
{passwords}	if ($var(known) != 1) {{
		xlog("L_NOTICE", "proxy auth: unknown user $fU\n");
		proxy_challenge("{domain}", "1");
		exit;
	}}
	if (!pv_proxy_authenticate("{domain}", "$var(password)", "0")) {{
		xlog("L_NOTICE", "failed proxy digest for $fU ($rm) from $si:$sp\n");
		proxy_challenge("{domain}", "1");
		exit;
	}}
	xlog("L_NOTICE", "proxy auth ok for $fU ($rm cseq $cs)\n");
	consume_credentials();
}}
"##
        )
    }
}

/// A running Kamailio front end. Dropping it stops the instance (its whole process group).
#[derive(Debug)]
pub struct FrontEnd {
    deployment: Deployment,
    ports: Ports,
    dir: PathBuf,
    cfg_path: PathBuf,
    proc: Supervised,
    /// How it was started, to start it again ([`FrontEnd::restart`]).
    command: (String, PathBuf, Vec<OsString>, PathBuf),
    restarts: u32,
}

/// Start options for one instance.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub binary: PathBuf,
    pub shm_mb: u32,
    pub pkg_mb: u32,
}

impl FrontEnd {
    /// Writes the configuration into `dir` and starts Kamailio (not waiting for readiness).
    pub(crate) fn spawn(config: &FrontEndConfig, dir: &Path, launch: &Launch) -> Result<FrontEnd> {
        let io = |what: &str, p: &Path, e| HarnessError::io(format!("{what} {}", p.display()), e);
        let run = dir.join("run");
        let work = dir.join("work");
        for p in [dir, &run, &work] {
            std::fs::create_dir_all(p).map_err(|e| io("creating", p, e))?;
        }
        let tls_path = dir.join("tls.cfg");
        std::fs::write(&tls_path, config.tls_cfg()).map_err(|e| io("writing", &tls_path, e))?;
        let cfg_path = dir.join("kamailio.cfg");
        std::fs::write(&cfg_path, config.kamailio_cfg(&tls_path))
            .map_err(|e| io("writing", &cfg_path, e))?;
        let args: Vec<OsString> = vec![
            "-DD".into(),
            "-E".into(),
            "-f".into(),
            cfg_path.clone().into(),
            "-Y".into(),
            run.into(),
            "-w".into(),
            work.clone().into(),
            "-P".into(),
            dir.join("kamailio.pid").into(),
            "-m".into(),
            launch.shm_mb.to_string().into(),
            "-M".into(),
            launch.pkg_mb.to_string().into(),
        ];
        let name = format!("kamailio {}", config.deployment.domain());
        let proc = Supervised::spawn(
            &name,
            &launch.binary,
            &args,
            &work,
            &dir.join("kamailio.log"),
        )?;
        Ok(FrontEnd {
            deployment: config.deployment,
            ports: config.ports,
            dir: dir.to_path_buf(),
            cfg_path,
            proc,
            command: (name, launch.binary.clone(), args, work),
            restarts: 0,
        })
    }

    fn name(&self) -> String {
        format!(
            "kamailio {} ({})",
            self.deployment.domain(),
            self.deployment.fqdn()
        )
    }

    /// Waits until the instance answers `OPTIONS sip:FQDN` over TCP with 200, or fails with
    /// the log's tail (early exit, missing module, port taken, timeout).
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last_error;
        loop {
            if let Some(status) = self.proc.try_wait() {
                return Err(self.exit_error(status.to_string()));
            }
            // The answer counts only from Kamailio's own listener: a port chosen for it can
            // be taken first by another process (which may answer too).
            let own = || {
                processes_in_group(self.proc.pgid())
                    .into_iter()
                    .any(|pid| listens_on(pid, self.ports.tcp))
            };
            match self.options_over_tcp(Duration::from_millis(1000)) {
                Ok(r) if r.status() == Some(200) && own() => return Ok(()),
                Ok(r) if r.status() == Some(200) => {
                    last_error = "another process listens on its TCP port".into()
                }
                Ok(r) => last_error = format!("answered {}", status_line(&r)),
                Err(e) => last_error = e.to_string(),
            }
            if start.elapsed() >= timeout {
                // A last look: maybe it died while we probed.
                if let Some(status) = self.proc.try_wait() {
                    return Err(self.exit_error(status.to_string()));
                }
                return Err(HarnessError::NotReady {
                    name: self.name(),
                    waited: start.elapsed(),
                    last_error,
                    log_path: self.log_path().to_path_buf(),
                    log_tail: self.log_tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exit_error(&self, status: String) -> HarnessError {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let log_tail = self.log_tail(40);
        if log.contains("Address already in use") {
            HarnessError::PortInUse { name: self.name() }
        } else if log.contains("could not find module") || log.contains("failed to load module") {
            HarnessError::MissingModule {
                name: self.name(),
                hint: INSTALL_HINT.into(),
                log_path: self.log_path().to_path_buf(),
                log_tail,
            }
        } else {
            HarnessError::Exited {
                name: self.name(),
                status,
                log_path: self.log_path().to_path_buf(),
                log_tail,
            }
        }
    }

    /// Sends `OPTIONS sip:FQDN` over a new TCP connection and returns the final response.
    pub fn options_over_tcp(&self, timeout: Duration) -> Result<SipMessage> {
        let mut c = SipTcpClient::connect(self.tcp_addr(), timeout)?;
        c.options(self.deployment.fqdn(), timeout)
    }

    /// Which deployment this front end serves.
    pub fn deployment(&self) -> Deployment {
        self.deployment
    }

    /// The SIP domain (`contoso.test`).
    pub fn domain(&self) -> &'static str {
        self.deployment.domain()
    }

    /// The front end's name (`fe.contoso.test`), also its certificate's name.
    pub fn fqdn(&self) -> &'static str {
        self.deployment.fqdn()
    }

    /// The plain TCP listener (users, SIPp). REGISTER there is challenged (digest).
    pub fn tcp_addr(&self) -> SocketAddr {
        loopback(self.ports.tcp)
    }

    /// The mutual-TLS listener: a certificate from the test CA is required; requests from a
    /// name that is neither a trusted application nor the federation partner get 403.
    /// Verify the server as [`fqdn`](Self::fqdn).
    pub fn mtls_addr(&self) -> SocketAddr {
        loopback(self.ports.mtls)
    }

    /// The TLS listener for users (no client certificate; REGISTER challenged), if enabled.
    pub fn user_tls_addr(&self) -> Option<SocketAddr> {
        self.ports.user_tls.map(loopback)
    }

    /// The control socket (`kamcmd -s tcp:127.0.0.1:PORT ...`).
    pub fn ctl_addr(&self) -> SocketAddr {
        loopback(self.ports.ctl)
    }

    /// The instance's folder (configurations, runtime and work folders, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generated `kamailio.cfg`.
    pub fn config_path(&self) -> &Path {
        &self.cfg_path
    }

    /// The instance's log (its stderr and stdout).
    pub fn log_path(&self) -> &Path {
        self.proc.log()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(self.log_path(), lines)
    }

    /// Whether the instance still runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.try_wait().is_none()
    }

    /// The id of the instance's process group (every process of the instance is in it).
    pub fn process_group(&self) -> u32 {
        self.proc.pgid()
    }

    /// The live processes of the instance (supervisor, Kamailio and its children).
    pub fn processes(&self) -> Vec<u32> {
        processes_in_group(self.proc.pgid())
    }

    /// Asks the instance to stop without waiting ([`stop`](Self::stop) waits).
    pub(crate) fn begin_stop(&mut self) {
        self.proc.begin_stop();
    }

    /// Stops the instance now (bounded: about 3 s of grace, then `SIGKILL` of the group).
    /// Dropping does the same.
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }

    /// Starts the instance again with the same configuration and ports (stopping it first
    /// if it still runs) and waits until it answers OPTIONS: a front end that crashed or
    /// was restarted by its operators. Its in-memory state (registrations, presence) is
    /// gone, as after a real restart. The new run logs to `kamailio.restart-N.log`.
    pub fn restart(&mut self, timeout: Duration) -> Result<()> {
        self.stop();
        self.restarts += 1;
        let (name, binary, args, work) = &self.command;
        let log = self
            .dir
            .join(format!("kamailio.restart-{}.log", self.restarts));
        self.proc = Supervised::spawn(name, binary, args, work, &log)?;
        self.wait_ready(timeout)
    }
}
