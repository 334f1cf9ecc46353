//! Configuration loading: good files load, bad ones name file, line, key and expectation.

use super::*;

#[test]
fn embedded_default_loads() {
    let c = Config::embedded().unwrap();
    assert_eq!(c.ports.len(), 2);
    assert_eq!(c.nfs.len(), 2);
    assert_eq!(c.chains[0].steps, vec![Step::Nf(0), Step::Nf(1)]);
    assert_eq!(c.chains[0].output, Some(PortId(1)));
    assert_eq!(c.chain_of(PortId(0)), Some(0));
    assert_eq!(c.chain_of(PortId(1)), None);
}

#[test]
fn distribute_steps_resolve() {
    let text = r#"
[[port]]
name = "a"
kind = "sink"
[[nf]]
name = "c1"
kind = "counter"
[[nf]]
name = "c2"
kind = "counter"
[[chain]]
name = "x"
ingress = ["a"]
steps = ["c1", { distribute = "protocol", branches = { tcp = ["c2"], 17 = [] }, default = ["c1"] }]
"#;
    let c = Config::parse("t.toml", text).unwrap();
    let want = Step::Distribute {
        selector: Selector::Protocol,
        branches: vec![(Label(17), vec![]), (Label(6), vec![Step::Nf(1)])],
        default: Some(vec![Step::Nf(0)]),
    };
    let Step::Distribute { branches, .. } = &c.chains[0].steps[1] else { panic!("not a distribute") };
    let Step::Distribute { branches: wb, .. } = &want else { unreachable!() };
    let mut got = branches.clone();
    got.sort_by_key(|(l, _)| l.0);
    let mut wb = wb.clone();
    wb.sort_by_key(|(l, _)| l.0);
    assert_eq!(got, wb);
}

#[test]
fn errors_name_file_line_key_and_expectation() {
    let cases: &[(&str, &str, usize, &str)] = &[
        ("[appliance]\ncores = 0\n", "appliance.cores", 2, "1 to 64"),
        ("[appliance]\ncorez = 2\n", "appliance.corez", 2, "unknown field `corez`"),
        ("[appliance]\ncores = 2\ncpus = [0]\n", "appliance.cpus", 3, "one CPU per worker core (2 of them), got 1"),
        ("[appliance]\ncpus = [4096]\n", "appliance.cpus", 2, "CPU 4096 does not exist"),
        ("[[port]]\nname = \"p\"\nkind = \"warp\"\n", "port[p]", 1, "unknown port kind `warp`"),
        ("[[port]]\nname = \"p\"\nkind = \"pcap\"\nwrit = \"x\"\n", "port[p]", 4, "unknown field `writ`"),
        (
            "[[port]]\nname = \"g\"\nkind = \"generator\"\nsize = 20\n",
            "port[g].size",
            4,
            "60 to 2048",
        ),
        (
            "[[nf]]\nname = \"fw\"\nkind = \"firewall\"\nconections = 5\n",
            "nf[fw]",
            4,
            "unknown field `conections`",
        ),
        ("[[nf]]\nname = \"x\"\nkind = \"nope\"\n", "nf[x]", 1, "compiled-in kinds: counter, ddos, firewall"),
        (
            "[[nf]]\nname = \"fw\"\nkind = \"firewall\"\n[[nf.rule]]\naction = \"allow\"\nsrc = \"10.0.0/8\"\n",
            "nf[fw]",
            1,
            "expected an IP prefix",
        ),
        (
            "[[port]]\nname = \"a\"\nkind = \"sink\"\n[[chain]]\nname = \"c\"\ningress = [\"b\"]\nsteps = []\n",
            "chain[c].ingress",
            6,
            "no port named `b`; ports are: a",
        ),
        (
            "[[port]]\nname = \"a\"\nkind = \"sink\"\n[[chain]]\nname = \"c\"\ningress = [\"a\"]\nsteps = [\"fw\"]\n",
            "chain[c].steps",
            7,
            "no NF named `fw`",
        ),
    ];
    for (text, key, line, needle) in cases {
        let e = Config::parse("bad.toml", text).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.at.file, "bad.toml");
        assert_eq!(&e.key, key, "{shown}");
        assert_eq!(e.at.line, *line, "{shown}");
        assert!(shown.contains(needle), "`{shown}` should mention `{needle}`");
    }
}

#[test]
fn a_port_feeds_one_chain() {
    let text = "[[port]]\nname = \"a\"\nkind = \"sink\"\n[[chain]]\nname = \"c\"\ningress = [\"a\"]\nsteps = []\n[[chain]]\nname = \"d\"\ningress = [\"a\"]\nsteps = []\n";
    let e = Config::parse("t.toml", text).unwrap_err();
    assert!(e.message.contains("already feeds chain `c`"), "{e}");
}

#[test]
fn classified_chains_share_a_port() {
    use crate::dataplane::select::ChainSelector;
    use nflet_nfs::packet::{parse, ParsePolicy};
    let text = r#"
[[port]]
name = "a"
kind = "sink"
[[port]]
name = "b"
kind = "sink"
[[chain]]
name = "voice"
ingress = ["a"]
vlan = 100
steps = []
[[chain]]
name = "guests"
ingress = ["a"]
src = ["192.168.50.0/24"]
steps = []
[[chain]]
name = "rest"
ingress = ["a"]
steps = []
"#;
    let c = Config::parse("t.toml", text).unwrap();
    let sel = ChainSelector::new(&c);
    let frame = |vlan: Option<u16>, src: [u8; 4]| {
        let mut f = Vec::new();
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
        match vlan {
            Some(v) => {
                b.single_vlan(v.try_into().unwrap()).ipv4(src, [10, 0, 0, 1], 64).udp(1, 2).write(&mut f, &[])
            }
            None => b.ipv4(src, [10, 0, 0, 1], 64).udp(1, 2).write(&mut f, &[]),
        }
        .unwrap();
        parse(&f, PortId(0), &ParsePolicy::default()).unwrap()
    };
    assert_eq!(sel.select(&frame(Some(100), [1, 2, 3, 4])), Some(0));
    assert_eq!(sel.select(&frame(Some(101), [192, 168, 50, 7])), Some(1));
    assert_eq!(sel.select(&frame(None, [192, 168, 50, 7])), Some(1));
    assert_eq!(sel.select(&frame(None, [192, 168, 51, 7])), Some(2));
    let mut on_b = frame(None, [1, 1, 1, 1]);
    on_b.ingress = PortId(1);
    assert_eq!(sel.select(&on_b), None);
}

#[test]
fn missing_file_is_reported() {
    let e = Config::load(Path::new("/nonexistent/nflet.toml")).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/nflet.toml: cannot read"), "{e}");
}

#[test]
fn type_errors_name_the_key() {
    let e = Config::parse("t.toml", "[appliance]\ncores = 1\nburst = \"lots\"\n").unwrap_err();
    assert_eq!((e.at.line, e.key.as_str()), (3, "appliance.burst"), "{e}");
    assert!(e.to_string().starts_with("t.toml:3:9: `appliance.burst`: invalid type"), "{e}");
    let e = Config::parse("t.toml", "[[port]]\nname = 7\n").unwrap_err();
    assert_eq!(e.key, "port.name", "{e}");
}

#[test]
fn management_section_is_validated() {
    assert_eq!(Config::embedded().unwrap().management, None, "no section: no NIC, no endpoint");
    let c = Config::parse("t.toml", "[management]\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n")
        .unwrap();
    assert_eq!(
        c.management,
        Some(Management {
            iface: "eth0".into(),
            address: Some((Ipv4Addr::new(10, 0, 2, 15), 24)),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            listen: Some(8080),
            token: None,
            capture_dir: crate::capture::DEFAULT_DIR.into(),
            dhcp: false,
        })
    );
    let c = Config::parse("t.toml", "[management]\niface = \"ens3\"\nlisten = 0\n").unwrap();
    assert_eq!(
        c.management,
        Some(Management {
            iface: "ens3".into(),
            address: None,
            gateway: None,
            listen: None,
            token: None,
            capture_dir: crate::capture::DEFAULT_DIR.into(),
            dhcp: false
        })
    );
    let c = Config::parse("t.toml", "[management]\naddress = \"dhcp\"\n").unwrap();
    assert_eq!(c.management.map(|m| (m.dhcp, m.address)), Some((true, None)));

    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "[management]\naddress = \"dhcp\"\ngateway = \"10.0.2.2\"\n",
            "management.gateway",
            3,
            "comes from the lease",
        ),
        ("[management]\ntoken = \"short\"\n", "management.token", 2, "at least 16 printable"),
        ("[management]\naddress = \"10.0.2.15\"\n", "management.address", 2, "e.g. \"10.0.2.15/24\""),
        ("[management]\naddress = \"10.0.2.15/33\"\n", "management.address", 2, "expected 1 to 32"),
        ("[management]\naddress = \"224.0.0.1/24\"\n", "management.address", 2, "unicast host address"),
        ("[management]\ngateway = \"10.0.2.2\"\n", "management.gateway", 2, "needs a static `address`"),
        (
            "[management]\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.3.2\"\n",
            "management.gateway",
            3,
            "must be on the NIC's subnet",
        ),
        (
            "[management]\ngateway = \"ten\"\naddress = \"10.0.2.15/24\"\n",
            "management.gateway",
            2,
            "IPv4 address",
        ),
        (
            "[management]\niface = \"a-very-long-interface-name\"\n",
            "management.iface",
            2,
            "1 to 15 characters",
        ),
        ("[management]\nlisten = 70000\n", "management.listen", 2, "invalid value"),
        ("[management]\nadress = \"10.0.2.15/24\"\n", "management.adress", 2, "unknown field `adress`"),
    ];
    for (text, key, line, needle) in cases {
        let e = Config::parse("bad.toml", text).unwrap_err();
        let shown = e.to_string();
        assert_eq!(&e.key, key, "{shown}");
        assert_eq!(e.at.line, *line, "{shown}");
        assert!(shown.contains(needle), "`{shown}` should mention `{needle}`");
    }
}

#[test]
fn state_dir_is_optional_and_not_empty() {
    let base = "[[port]]\nname = \"a\"\nkind = \"sink\"\n";
    assert_eq!(Config::parse("t.toml", base).unwrap().settings.state_dir, None);
    let c = Config::parse("t.toml", &format!("[appliance]\nstate_dir = \"/dev/shm/n\"\n{base}")).unwrap();
    assert_eq!(c.settings.state_dir.as_deref(), Some(std::path::Path::new("/dev/shm/n")));
    let e = Config::parse("t.toml", &format!("[appliance]\nstate_dir = \"\"\n{base}")).unwrap_err();
    assert!(e.to_string().contains("appliance.state_dir"), "{e}");
}
