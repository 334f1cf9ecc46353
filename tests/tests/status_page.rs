//! The management endpoint's status page in a real browser: headless Chromium loads it from a
//! running `nflet run`, lets its script poll `/status` for a few (virtual) seconds, and the
//! test checks both the DOM the script built and the pixels of the chart it drew.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nflet_tests::{target_dir, Nflet};

/// The throughput line colour of the first chain (`PALETTE[0]` in status.html).
const FIRST_CHAIN_RGB: [u8; 3] = [0x00, 0x72, 0xb2];

fn chromium() -> PathBuf {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| Command::new("which").arg(name).output().ok().filter(|o| o.status.success()))
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    found.expect("chromium is not installed: apt-get install chromium (tests/run.sh does)")
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: nflet\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=...`), giving
/// the page's timers `budget_ms` of virtual time.
fn browse(url: &str, mode: &str, budget_ms: u32) -> String {
    let profile = std::env::temp_dir().join(format!("nflet-chromium-{}", std::process::id()));
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1000,760",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={budget_ms}"),
            mode,
            url,
        ])
        .output()
        .expect("start chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn attribute(dom: &str, name: &str) -> Option<u64> {
    let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
    dom.get(at..)?.split('"').next()?.parse().ok()
}

/// Pixels of exactly `rgb` inside the rectangle `x0..x1, y0..y1` of a PNG.
fn count_colour(png_path: &Path, rgb: [u8; 3], (x0, x1, y0, y1): (u32, u32, u32, u32)) -> (u64, u32, u32) {
    let decoder =
        png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).expect("open screenshot")));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("decode");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let mut n = 0;
    for y in y0..y1.min(info.height) {
        for x in x0..x1.min(info.width) {
            let i = (y as usize * info.width as usize + x as usize) * channels;
            if buf[i..i + 3] == rgb {
                n += 1;
            }
        }
    }
    (n, info.width, info.height)
}

#[test]
fn status_page_draws_live_throughput_in_a_real_browser() {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let config = format!(
        "{}\n[management]\nlisten = {port}\n",
        include_str!("../../appliance/src/config/default.toml")
            .replace("rate_pps = 1000000", "rate_pps = 20000")
    );
    let nflet = Nflet::start(&config, "page");
    let start = Instant::now();
    // Wait for traffic, not just for the endpoint: the browser's virtual time runs the page's
    // polls within about a second of real time, and a page opened before the generator sends
    // sees no throughput.
    let flowing = |status: &str| {
        let body = status.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|doc| doc["chains"][0]["packets"].as_u64())
            .is_some_and(|n| n > 0)
    };
    while !get(port, "/status").is_some_and(|s| flowing(&s)) {
        assert!(start.elapsed() < Duration::from_secs(20), "no traffic in /status after 20 s");
        sleep(Duration::from_millis(100));
    }
    let page = get(port, "/").expect("GET /");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n") && page.contains("Content-Type: text/html"), "{page}");
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");

    let url = format!("http://127.0.0.1:{port}/");
    // The script's own view: it polled several times and saw packets flowing.
    let dom = browse(&url, "--dump-dom", 6000);
    let samples = attribute(&dom, "data-samples").unwrap_or_else(|| panic!("no samples in:\n{dom}"));
    assert!(samples >= 3, "the page polled /status {samples} times:\n{dom}");
    let rate = attribute(&dom, "data-rate").unwrap_or_else(|| panic!("no rate in:\n{dom}"));
    assert!(rate > 0, "the page saw no throughput:\n{dom}");
    assert!(dom.contains("<th>chain</th>") && dom.contains("<td>main</td>"), "chain table missing:\n{dom}");
    assert!(dom.contains("<span id=\"error\"></span>"), "the page reported an error:\n{dom}");

    // The picture: the throughput chart (left) holds a line in the first chain's colour,
    // and the drops chart (right) does not use it. The line advances about 3.5 px a sample;
    // 30 s of virtual time draws ~30 samples, so even a flat line (a steady rate) is ~100 px
    // long and 2-3 px thick. (With 6 s a flat line was only ~26 px: a rate that happened to
    // be steady failed the check.)
    let shot = target_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(&url, &format!("--screenshot={}", shot.display()), 30_000);
    let (left, w, h) = count_colour(&shot, FIRST_CHAIN_RGB, (0, 500, 0, 400));
    assert_eq!((w, h), (1000, 760), "screenshot size");
    assert!(left >= 100, "only {left} pixels of the throughput line in {}", shot.display());
    let (right, _, _) = count_colour(&shot, FIRST_CHAIN_RGB, (500, 1000, 60, 320));
    assert!(right < left / 10, "the drops chart has {right} throughput-coloured pixels");
    let (out, _) = nflet.stop();
    assert!(out.contains("main"), "{out}");
}
