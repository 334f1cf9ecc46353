//! `peer`: a small real TCP/UDP endpoint for nflet's end-to-end tests, run inside network
//! namespaces. Data is a deterministic byte stream so the receiver can check it byte-exact.
//!
//! Modes (all print one result line on stdout):
//!   tcp-serve PORT                 accept one connection, read to EOF: `bytes=N hash=H`
//!   tcp-send ADDR PORT BYTES       connect, send BYTES of the stream: `sent=N hash=H`
//!   tcp-probe ADDR PORT MS         try to connect within MS: `connected` or `failed`
//!   udp-echo PORT COUNT            echo COUNT datagrams back to their sender: `echoed=N`
//!   udp-ping ADDR PORT COUNT MS    send COUNT datagrams, count replies: `replies=N`

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    match mode {
        "tcp-serve" => {
            let port: u16 = arg(&args, 2, "PORT");
            let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
            println!("listening");
            let (mut s, _) = l.accept().expect("accept");
            let (mut n, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        fnv(&mut h, &buf[..k]);
                        n += k as u64;
                    }
                    Err(e) => {
                        eprintln!("peer: read: {e}");
                        break;
                    }
                }
            }
            println!("bytes={n} hash={h:016x}");
        }
        "tcp-send" => {
            let addr: std::net::IpAddr = arg(&args, 2, "ADDR");
            let port: u16 = arg(&args, 3, "PORT");
            let total: u64 = arg(&args, 4, "BYTES");
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(5))
                .expect("connect");
            let (mut i, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
            let mut buf = vec![0u8; 65536];
            while i < total {
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
        _ => {
            eprintln!("usage: peer tcp-serve|tcp-send|tcp-probe|udp-echo|udp-ping ...");
            std::process::exit(2);
        }
    }
}
