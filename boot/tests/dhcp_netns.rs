//! The DHCP client against a real DHCP server: dnsmasq in one network namespace, the client
//! in another, joined by a veth pair. Root only (network namespaces).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nflet_boot::dhcp::Client;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Net {
    srv: String,
    cli: String,
    dnsmasq: Option<Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in [&self.srv, &self.cli] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[test]
fn leases_and_renews_from_dnsmasq() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root for network namespaces (run ./tests/run.sh as root)"
    );
    let id = std::process::id() % 100_000;
    let mut net = Net { srv: format!("dhcps{id}"), cli: format!("dhcpc{id}"), dnsmasq: None };
    ip(&["netns", "add", &net.srv]);
    ip(&["netns", "add", &net.cli]);
    ip(&["-n", &net.srv, "link", "add", "d0", "type", "veth", "peer", "name", "d1", "netns", &net.cli]);
    ip(&["-n", &net.srv, "addr", "add", "192.168.77.1/24", "dev", "d0"]);
    ip(&["-n", &net.srv, "link", "set", "d0", "up"]);
    ip(&["-n", &net.cli, "link", "set", "d1", "up"]);
    ip(&["-n", &net.cli, "link", "set", "d1", "address", "02:00:00:77:00:01"]);
    let leases = std::env::temp_dir().join(format!("nflet-dhcp-{id}.leases"));
    net.dnsmasq = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.srv,
                "dnsmasq",
                "--no-daemon",
                "--port=0",
                "--interface=d0",
                "--bind-interfaces",
            ])
            .arg("--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,10m")
            .arg("--dhcp-option=3,192.168.77.1")
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)"),
    );
    std::thread::sleep(Duration::from_millis(300));

    let cli = net.cli.clone();
    let (lease, renewed) = std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/var/run/netns/{cli}")).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut c = Client::open("d1", [2, 0, 0, 0x77, 0, 1]).unwrap();
        let lease = c.acquire(Duration::from_secs(20)).unwrap();
        // Renewing is unicast from the leased address: give it to the NIC first.
        let add = format!("{}/{}", lease.address, lease.prefix_len);
        let out = Command::new("ip").args(["addr", "add", &add, "dev", "d1"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let renewed = c.renew(&lease, false, Duration::from_secs(5)).unwrap();
        (lease, renewed)
    })
    .join()
    .unwrap();

    let octets = lease.address.octets();
    assert_eq!(&octets[..3], &[192, 168, 77], "{lease:?}");
    assert!((50..=60).contains(&octets[3]), "{lease:?}");
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router, Some(Ipv4Addr::new(192, 168, 77, 1)));
    assert_eq!(lease.server, Ipv4Addr::new(192, 168, 77, 1));
    assert_eq!(lease.lease, Duration::from_secs(600));
    assert_eq!(lease.renew, Duration::from_secs(300));
    let renewed = renewed.expect("the server acknowledged the renewal");
    assert_eq!(renewed.address, lease.address, "the same address on renewal");
    let table = std::fs::read_to_string(&leases).unwrap_or_default();
    assert!(table.contains("02:00:00:77:00:01") && table.contains(&lease.address.to_string()), "{table}");
    let _ = std::fs::remove_file(&leases);
}
