//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary folder, listening on
//! 127.0.0.1 (a free port) and a socket in that folder, stopped when the value is dropped (or,
//! for the cluster a test binary shares, when the process exits). As root it runs as `nobody`,
//! since PostgreSQL refuses to run as root.
//!
//! Without PostgreSQL installed, [`Cluster::shared`] and [`Cluster::start`] return `None` after
//! saying loudly that the test is skipped; with `TIDINGS_REQUIRE_POSTGRES=1` (set by CI) they
//! panic instead, so CI never skips them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The login every test cluster has (with a password, over TCP).
pub const USER: &str = "tidings";
pub const PASSWORD: &str = "s3cret-pw";

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// `Some(uid)` when the server runs as another user than the tests.
    run_as: Option<&'static str>,
    /// Removed with the cluster (a shared one's folder is removed at exit).
    _keep: Option<tempfile::TempDir>,
}

/// The folder with `initdb` and `pg_ctl`: `PATH` or Debian's `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Some(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn required() -> bool {
    std::env::var("TIDINGS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

fn missing(what: &str) -> Option<Cluster> {
    assert!(
        !required(),
        "TIDINGS_REQUIRE_POSTGRES=1 but {what}; install it (apt-get install postgresql-15)"
    );
    eprintln!(
        "\n*** SKIPPED: PostgreSQL tests need initdb and pg_ctl ({what}).\n\
         *** Install them with `apt-get install postgresql-15` (Debian) to run them.\n"
    );
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn stop_shared() {
    if let Some(Some(c)) = SHARED.get() {
        c.stop();
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> i32;
}

impl Cluster {
    /// The cluster every test of this binary shares (each takes its own database).
    pub fn shared() -> Option<&'static Cluster> {
        SHARED
            .get_or_init(|| {
                let c = Cluster::start_in(false)?;
                // SAFETY: registering a plain function to run at exit.
                unsafe {
                    atexit(stop_shared);
                }
                Some(c)
            })
            .as_ref()
    }

    /// A cluster of the caller's own (stopped and removed when dropped).
    pub fn start() -> Option<Cluster> {
        Cluster::start_in(true)
    }

    fn start_in(own: bool) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            return missing("they are not installed");
        };
        let run_as = is_root().then_some("nobody");
        let keep = tempfile::Builder::new()
            .prefix("tidings-pg-")
            .tempdir()
            .unwrap();
        let dir = keep.path().to_path_buf();
        if run_as.is_some() {
            // The server's user must own its folder (and reach it).
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if run_as.is_some() {
            std::os::unix::fs::chown(&pwfile, Some(65534), Some(65534)).unwrap();
        }
        let mut cluster = Cluster {
            dir: dir.clone(),
            bin,
            port: free_port(),
            run_as,
            _keep: None,
        };
        let data = dir.join("data");
        let out = cluster.pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        cluster.start_server();
        if own {
            cluster._keep = Some(keep);
        } else {
            // Removed by `stop_shared` at exit.
            let _ = keep.keep();
        }
        Some(cluster)
    }

    /// Runs a PostgreSQL program as the server's user.
    fn pg(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(&self.dir).output().unwrap()
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let data = self.dir.join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let out = self.pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server at once (connections are cut, as when a database machine dies).
    pub fn stop(&self) {
        let data = self.dir.join("data");
        let _ = self.pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// A URL for `database` with the right login.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// A new, empty database of its own for one test; its URL.
    pub fn new_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL with psql over the socket; its output (unaligned, tuples only).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let out = Command::new(psql)
            .args([
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The database name in a URL from [`Cluster::new_database`].
    pub fn database_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
