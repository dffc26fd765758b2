//! The reference proxy: Debian's nginx with `proxy_pass` to the fake, setting the same
//! session headers the gateway sets (session token, empty-body signature, bunq's
//! standard headers, a fresh request id per request).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tools item 3 needs that are not installed.
fn missing_tools() -> Vec<&'static str> {
    [("nginx", "/usr/sbin/nginx"), ("wrk", "/usr/bin/wrk")]
        .into_iter()
        .filter(|(tool, path)| !Path::new(path).exists() && !on_path(tool))
        .map(|(tool, _)| tool)
        .collect()
}

/// Without `--install`: whether nginx and wrk are there, and how to get them if not.
pub fn tools_present() -> Result<String, String> {
    let missing = missing_tools();
    if missing.is_empty() {
        Ok("nginx and wrk already installed".into())
    } else {
        Err(format!(
            "{missing:?} missing: `apt-get install {}`, or run `cargo xtask bench --install`",
            missing.join(" ")
        ))
    }
}

/// `--install`: makes sure `nginx` and `wrk` are on the machine, installing Debian's
/// packages if not. Returns what was done, for the output.
pub fn ensure_tools() -> Result<String, String> {
    let missing = missing_tools();
    if missing.is_empty() {
        return Ok("nginx and wrk already installed".into());
    }
    println!("  installing Debian packages {missing:?} (apt-get update; apt-get install -y) ...");
    let update = Command::new("apt-get")
        .arg("update")
        .arg("-qq")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("apt-get update: {e}"))?;
    if !update.success() {
        return Err(format!("apt-get update failed ({update})"));
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("apt-get install: {e}"))?;
    if !install.success() {
        return Err(format!("apt-get install {missing:?} failed ({install})"));
    }
    Ok(format!("installed {missing:?} with apt-get"))
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running nginx (master process in the foreground, our child). Stopped on drop.
pub struct Nginx {
    master: Option<Child>,
    dir: PathBuf,
}

/// The headers nginx adds to each proxied request, as (name, value).
pub type ProxyHeaders = Vec<(String, String)>;

impl Nginx {
    /// Writes a config under `dir` (mode 0600: it holds a session token) and starts
    /// nginx listening on `127.0.0.1:port`, proxying everything to `upstream` with
    /// `headers` set; waits (bounded) until the port accepts.
    pub fn start(
        dir: &Path,
        port: u16,
        upstream: &str,
        headers: &ProxyHeaders,
    ) -> Result<Nginx, String> {
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        let conf = config(dir, port, upstream, headers);
        let conf_path = dir.join("nginx.conf");
        bunq_signing::write_private_file(&conf_path, conf.as_bytes()).map_err(|e| e.to_string())?;
        let master = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        let mut nginx = Nginx {
            master: Some(master),
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = nginx.master.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    return Err(format!("nginx exited with {status}: {log}"));
                }
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && !nginx.workers().is_empty()
            {
                return Ok(nginx);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("nginx did not accept connections within 10 s".into())
    }

    /// [`start`](Self::start) on a free port in front of `fake`; returns the port too.
    pub fn start_in_front_of(
        fake: &bunq_testkit::FakeBunq,
        dir: &Path,
        headers: &ProxyHeaders,
    ) -> Result<(Nginx, u16), String> {
        let port = super::gateway::free_port()?;
        let upstream = fake.local_addr().to_string();
        Nginx::start(dir, port, &upstream, headers).map(|n| (n, port))
    }

    /// The master's pid.
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::id)
    }

    /// The worker processes' pids.
    pub fn workers(&self) -> Vec<u32> {
        self.master_pid()
            .map(super::load::children)
            .unwrap_or_default()
    }

    /// SIGQUIT (graceful), a bounded wait, then SIGKILL; removes the config (it holds a
    /// session token).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut child) = self.master.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("nginx.conf"));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// nginx's config: as many workers as cores (like the gateway's tokio runtime),
/// keep-alive to the upstream (as the gateway's client pool does), no access log.
fn config(dir: &Path, port: u16, upstream: &str, headers: &ProxyHeaders) -> String {
    let d = dir.display();
    let mut set = String::new();
    for (name, value) in headers {
        set.push_str(&format!(
            "            proxy_set_header {name} \"{}\";\n",
            value.replace('"', "")
        ));
    }
    format!(
        r#"worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream fake {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Bunq-Client-Request-Id $request_id;
{set}        }}
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sets_session_headers_and_keepalive() {
        let headers = vec![
            (
                "X-Bunq-Client-Authentication".to_owned(),
                "tok\"en".to_owned(),
            ),
            ("X-Bunq-Client-Signature".to_owned(), "c2ln".to_owned()),
        ];
        let conf = config(Path::new("/tmp/x"), 8081, "127.0.0.1:9000", &headers);
        assert!(conf.contains("server 127.0.0.1:9000;"));
        assert!(conf.contains("listen 127.0.0.1:8081"));
        assert!(conf.contains("keepalive 64;"));
        // Quotes are stripped so a value cannot break out of the directive.
        assert!(conf.contains("proxy_set_header X-Bunq-Client-Authentication \"token\";"));
        assert!(conf.contains("proxy_set_header X-Bunq-Client-Signature \"c2ln\";"));
        assert!(conf.contains("$request_id"));
    }
}
