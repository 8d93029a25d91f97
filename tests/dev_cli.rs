//! `sts-bridge dev` as a newcomer runs it: the real binary, free loopback ports, a temporary
//! folder for its files.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sts-bridge");

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sts-bridge dev` on free ports in `dir`; returns the process and what it printed
/// up to "Press Ctrl-C".
fn start_dev(dir: &std::path::Path) -> (Running, String) {
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--issuer-listen",
            "127.0.0.1:0",
        ])
        .args(["--google-listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sts-bridge dev starts");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("Press Ctrl-C") {
                let _ = tx.send(printed.clone());
            }
        }
    });
    let printed = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the dev stack printed its instructions");
    (running, printed)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn dev_stack_on_other_ports_prints_commands_that_work_and_keeps_tokens_private() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, printed) = start_dev(dir.path());

    assert_eq!(mode(&dir.path().join("alice.token")), 0o600, "{printed}");
    // The issuer is not on its default address, so the printed command names it.
    let line = printed
        .lines()
        .find(|l| l.contains("TOKEN=$(") && l.contains("dev token"))
        .expect("a dev token command");
    let issuer = line
        .split("--issuer ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no --issuer in {line}"));
    assert!(issuer.starts_with("http://127.0.0.1:"), "{line}");
    assert_ne!(issuer, "http://127.0.0.1:8081/");

    // The printed re-mint command writes a fresh token, owner-only.
    let out = dir.path().join("fresh.token");
    let started = Instant::now();
    let status = Command::new(BIN)
        .args([
            "dev",
            "token",
            "--issuer",
            issuer,
            "--sub",
            "auth0|alice",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "dev token took {:?}", started.elapsed());
    assert_eq!(mode(&out), 0o600);
    let token = std::fs::read_to_string(&out).unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
}

#[test]
fn a_taken_port_names_the_flag_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--issuer-listen",
            &addr,
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains("--issuer-listen"), "{stderr}");
}
