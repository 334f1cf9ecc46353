//! `peer`: a small real TCP/UDP endpoint for nflet's end-to-end tests, run inside network
//! namespaces. Data is a deterministic byte stream so the receiver can check it byte-exact.
//!
//! Modes (all print one result line on stdout):
//!   tcp-serve PORT [show-peer]     accept one connection, read to EOF: `bytes=N hash=H`
//!                                  (with `show-peer`, first `from=IP:PORT` of the client,
//!                                  and `gap_ms=G` before the result: the longest stall)
//!   tcp-send ADDR PORT BYTES [BPS] connect, send BYTES of the stream (at most BPS bytes a
//!                                  second if given): `sent=N hash=H`
//!   tcp-probe ADDR PORT MS         try to connect within MS: `connected` or `failed`
//!   udp-echo PORT COUNT            echo COUNT datagrams back to their sender: `echoed=N`
//!   udp-ping ADDR PORT COUNT MS    send COUNT datagrams, count replies: `replies=N`
//!   udp-reflect PORT COUNT         answer COUNT datagrams with the sender's `ip:port` as seen
//!                                  here: `reflected=N`
//!   udp-query MS TARGET...         from one socket, ask each `ip:port` target (a reflector)
//!                                  how it sees us: one `ip:port` (or `none`) per target
//!   udp-many ADDR PORT N MS        N sockets each ask a reflector once: `replies=R distinct=D`
//!                                  (D = distinct source endpoints the reflector saw)
//!   udp-refused ADDR PORT MS       send on a connected socket: `refused` (ECONNREFUSED from
//!                                  an ICMP port unreachable), `reply` or `timeout`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

fn stream_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn fnv(hash: &mut u64, data: &[u8]) {
    for b in data {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("peer: missing or bad {what}");
        std::process::exit(2)
    })
}

/// Accepts one connection, or exits with an error after `limit`.
fn accept_within(l: &TcpListener, limit: Duration) -> (TcpStream, SocketAddr) {
    l.set_nonblocking(true).expect("nonblocking");
    let deadline = std::time::Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, from)) => {
                s.set_nonblocking(false).expect("blocking");
                return (s, from);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("peer: accept: {e} (no connection within {limit:?})");
                std::process::exit(1);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    match mode {
        "tcp-serve" => {
            let port: u16 = arg(&args, 2, "PORT");
            let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
            println!("listening");
            // Never wait forever: a test whose client never comes (the appliance died) fails
            // instead of hanging the suite.
            let (mut s, from) = accept_within(&l, Duration::from_secs(300));
            s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
            let flag = |f: &str| args.iter().skip(3).any(|a| a == f);
            // `ack`: answer each read with one byte, so a client can wait for its data to land.
            let (show_peer, ack) = (flag("show-peer"), flag("ack"));
            if show_peer {
                println!("from={from}");
            }
            let (mut n, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
            let mut buf = vec![0u8; 65536];
            let (mut last, mut gap) = (std::time::Instant::now(), Duration::ZERO);
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        fnv(&mut h, &buf[..k]);
                        n += k as u64;
                        if ack && s.write_all(b".").is_err() {
                            break;
                        }
                        gap = gap.max(last.elapsed());
                        last = std::time::Instant::now();
                    }
                    Err(e) => {
                        eprintln!("peer: read: {e}");
                        break;
                    }
                }
            }
            if show_peer {
                // The longest wait between two reads: how long the stream stood still.
                println!("gap_ms={}", gap.as_millis());
            }
            println!("bytes={n} hash={h:016x}");
        }
        "tcp-send" => {
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let total: u64 = arg(&args, 4, "BYTES");
            let bps: Option<u64> = args.get(5).map(|_| arg(&args, 5, "BPS"));
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(5))
                .expect("connect");
            let (mut i, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
            let mut buf = vec![0u8; if bps.is_some() { 16384 } else { 65536 }];
            let start = std::time::Instant::now();
            while i < total {
                if let Some(bps) = bps.filter(|b| *b > 0) {
                    // Paced: do not run ahead of BPS bytes per second.
                    let due = Duration::from_secs_f64(i as f64 / bps as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let k = (total - i).min(buf.len() as u64) as usize;
                for (j, b) in buf[..k].iter_mut().enumerate() {
                    *b = stream_byte(i + j as u64);
                }
                s.write_all(&buf[..k]).expect("write");
                fnv(&mut h, &buf[..k]);
                i += k as u64;
            }
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let _ = s.read(&mut buf);
            println!("sent={i} hash={h:016x}");
        }
        "tcp-split" => {
            // Sends FIRST, waits until the server has it (`tcp-serve … ack`), waits GAP_MS,
            // sends SECOND: a payload split in two segments that reach the server in order.
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let gap: u64 = arg(&args, 4, "GAP_MS");
            let first: String = arg(&args, 5, "FIRST");
            let second: String = arg(&args, 6, "SECOND");
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(5))
                .expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
            let mut one = [0u8; 1];
            s.write_all(first.as_bytes()).expect("write");
            s.read_exact(&mut one).expect("the server's ack of the first part");
            std::thread::sleep(Duration::from_millis(gap));
            s.write_all(second.as_bytes()).expect("write");
            s.read_exact(&mut one).expect("the server's ack of the second part");
            println!("sent={}", first.len() + second.len());
        }
        "tcp-probe" => {
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let ms: u64 = arg(&args, 4, "MS");
            match TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_millis(ms)) {
                Ok(_) => println!("connected"),
                Err(_) => println!("failed"),
            }
        }
        "udp-echo" => {
            let port: u16 = arg(&args, 2, "PORT");
            let count: u64 = arg(&args, 3, "COUNT");
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            println!("listening");
            let mut n = 0;
            let mut buf = [0u8; 2048];
            while n < count {
                let Ok((k, from)) = s.recv_from(&mut buf) else { break };
                let _ = s.send_to(&buf[..k], from);
                n += 1;
            }
            println!("echoed={n}");
        }
        "udp-ping" => {
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let count: u64 = arg(&args, 4, "COUNT");
            let ms: u64 = arg(&args, 5, "MS");
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(ms))).expect("timeout");
            let mut replies = 0;
            let mut buf = [0u8; 2048];
            for i in 0..count {
                let msg = format!("ping {i}");
                let _ = s.send_to(msg.as_bytes(), (addr, port));
                if let Ok((k, _)) = s.recv_from(&mut buf) {
                    if &buf[..k] == msg.as_bytes() {
                        replies += 1;
                    }
                }
            }
            println!("replies={replies}");
        }
        "udp-reflect" => udp_reflect(arg(&args, 2, "PORT"), arg(&args, 3, "COUNT")),
        "udp-query" => {
            let ms: u64 = arg(&args, 2, "MS");
            let targets: Vec<SocketAddr> = (3..args.len()).map(|i| arg(&args, i, "TARGET")).collect();
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let seen: Vec<String> =
                targets.iter().map(|t| ask(&s, *t, ms, 3).unwrap_or_else(|| "none".into())).collect();
            println!("{}", seen.join(" "));
        }
        "udp-many" => {
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let n: usize = arg(&args, 4, "N");
            let ms: u64 = arg(&args, 5, "MS");
            udp_many(SocketAddr::new(addr, port), n, ms);
        }
        // Sends COUNT datagrams at PPS (paced in 1 ms steps), each carrying its number.
        "udp-blast" => {
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let count: u64 = arg(&args, 4, "COUNT");
            let pps: u64 = arg(&args, 5, "PPS");
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let start = std::time::Instant::now();
            for i in 0..count {
                let due = Duration::from_nanos(i * 1_000_000_000 / pps.max(1));
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    if wait > Duration::from_millis(1) {
                        std::thread::sleep(wait);
                    }
                }
                let _ = s.send_to(&i.to_be_bytes(), (addr, port));
            }
            println!("sent={count} seconds={:.3}", start.elapsed().as_secs_f64());
        }
        // Counts datagrams on PORT until none arrived for IDLE_MS.
        "udp-count" => {
            let port: u16 = arg(&args, 2, "PORT");
            let idle: u64 = arg(&args, 3, "IDLE_MS");
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(idle))).expect("timeout");
            println!("listening");
            let mut n = 0u64;
            let mut buf = [0u8; 2048];
            // The first datagram may take long to come; after it, silence ends the count.
            s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            while s.recv_from(&mut buf).is_ok() {
                n += 1;
                s.set_read_timeout(Some(Duration::from_millis(idle))).expect("timeout");
            }
            println!("received={n}");
        }
        "udp-refused" => {
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let ms: u64 = arg(&args, 4, "MS");
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.connect((addr, port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(ms))).expect("timeout");
            let mut buf = [0u8; 2048];
            let mut result = "timeout";
            for _ in 0..3 {
                let _ = s.send(b"anyone?");
                match s.recv(&mut buf) {
                    Ok(_) => result = "reply",
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => result = "refused",
                    Err(_) => continue,
                }
                break;
            }
            println!("{result}");
        }
        _ => {
            eprintln!("usage: peer tcp-serve|tcp-send|tcp-probe|udp-echo|udp-ping|udp-reflect|udp-query|udp-many|udp-blast|udp-count|udp-refused ...");
            std::process::exit(2);
        }
    }
}

fn udp_reflect(port: u16, count: u64) {
    let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    println!("listening");
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while n < count {
        let Ok((_, from)) = s.recv_from(&mut buf) else { break };
        let _ = s.send_to(from.to_string().as_bytes(), from);
        n += 1;
    }
    println!("reflected={n}");
}

/// Asks reflector `to` how it sees socket `s`, `tries` times at most.
fn ask(s: &UdpSocket, to: SocketAddr, ms: u64, tries: usize) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_millis(ms))).expect("timeout");
    let mut buf = [0u8; 2048];
    for _ in 0..tries {
        let _ = s.send_to(b"who am i", to);
        while let Ok((k, from)) = s.recv_from(&mut buf) {
            if from == to {
                return Some(String::from_utf8_lossy(&buf[..k]).into_owned());
            }
        }
    }
    None
}

/// `n` concurrent flows to one reflector, each from its own socket (its own inside port).
fn udp_many(to: SocketAddr, n: usize, ms: u64) {
    let socks: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind")).collect();
    let mut seen: Vec<Option<String>> = vec![None; n];
    let mut buf = [0u8; 2048];
    for _round in 0..3 {
        for (i, s) in socks.iter().enumerate() {
            if seen[i].is_none() {
                let _ = s.send_to(b"who am i", to);
                // Pace the burst so the reflector's receive buffer keeps up.
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        // Every reply sits in its own socket's buffer: wait once, then collect without blocking.
        std::thread::sleep(Duration::from_millis(ms));
        for (i, s) in socks.iter().enumerate() {
            if seen[i].is_some() {
                continue;
            }
            s.set_nonblocking(true).expect("nonblocking");
            while let Ok((k, from)) = s.recv_from(&mut buf) {
                if from == to {
                    seen[i] = Some(String::from_utf8_lossy(&buf[..k]).into_owned());
                }
            }
        }
        if seen.iter().all(Option::is_some) {
            break;
        }
    }
    let replies = seen.iter().filter(|s| s.is_some()).count();
    let distinct: std::collections::HashSet<&String> = seen.iter().flatten().collect();
    println!("replies={replies} distinct={}", distinct.len());
}
