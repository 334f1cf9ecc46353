//! `nflet top` against a running appliance: `nflet run` on the embedded default with the
//! management endpoint on; `--once` prints one view with the chain `main` moving, and a live
//! `nflet top` ends with a clear message when the appliance goes away.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nflet_tests::{binary, Nflet};

const DEFAULT: &str = include_str!("../../appliance/src/config/default.toml");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port()
}

#[test]
fn top_shows_the_chains_rates_and_ends_when_the_appliance_goes() {
    let listen = free_port();
    let config = format!(
        "{}\n[management]\nlisten = {listen}\n",
        DEFAULT.replace("rate_pps = 1000000", "rate_pps = 20000")
    );
    let nflet = Nflet::start(&config, "top");
    let endpoint = format!("127.0.0.1:{listen}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the endpoint did not come up");
        sleep(Duration::from_millis(50));
    }
    sleep(Duration::from_millis(300));
    let out = Command::new(binary("nflet"))
        .args(["top", "--once", "--interval", "1", "--endpoint", &endpoint])
        .output()
        .expect("nflet top");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains('\x1b'), "--once prints no escape codes: {text:?}");
    assert!(text.starts_with(&format!("nflet {} at {endpoint}: up ", env!("CARGO_PKG_VERSION"))), "{text}");
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row `{name}` in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let num = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| panic!("`{s}` in\n{text}")) };
    // main: pps, Mbit/s, drops/s, CPU ms/s. The generator sends 20 000 frames/s, of which
    // the firewall denies UDP to ports 0-9.
    let main = row("main");
    assert!(num(&main[1]) > 1000.0, "{text}");
    assert!(num(&main[2]) > 0.0, "{text}");
    assert!(num(&main[4]) > 0.0, "{text}");
    let gen = row("gen");
    assert!(num(&gen[1]) > 1000.0, "{text}");
    let core = row("0");
    assert!(num(&core[1]) > 1000.0, "{text}");

    // A live view, then the appliance stops: top says so and fails.
    let mut live = Command::new(binary("nflet"))
        .args(["top", "--interval", "0.2", "--endpoint", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nflet top");
    sleep(Duration::from_millis(700));
    let _ = nflet.stop();
    let start = Instant::now();
    while live.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nflet top did not notice the appliance went away"
        );
        sleep(Duration::from_millis(50));
    }
    let out = live.wait_with_output().expect("top output");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(stdout.contains("\x1b[2J\x1b[H"), "live views clear the screen: {stdout:?}");
    assert!(stdout.contains("main"), "{stdout}");
    assert!(stderr.contains("the appliance went away"), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach the management endpoint at {endpoint}")), "{stderr}");

    // Nothing listening at all: a clear message, at once.
    let out = Command::new(binary("nflet"))
        .args(["top", "--once", "--endpoint", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("nflet top");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is nflet running with `[management] listen`"));
}
