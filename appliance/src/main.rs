//! The `nflet` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use nflet::bench::{bench, BenchSpec};
use nflet::config::Config;
use nflet::dataplane::open::Offline;
use nflet::dataplane::{build_pipelines, run, RunOptions, Summary};
use nflet::mgmt::client::{request, Answer};
use nflet::observe::Observers;
use nflet::report;
use nflet::scaleout::launcher::Role;
use nflet::traffic::gen::{run_gen, GenOptions};

#[derive(Parser, Debug)]
#[command(
    name = "nflet",
    version,
    about = "A network-function appliance: firewall, NAT, monitor and more on a run-to-completion dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance (without -c: the embedded default, generator → firewall → monitor → sink).
    Run {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Stop after this many seconds.
        #[arg(short, long)]
        duration: Option<f64>,
        /// Override the number of worker cores.
        #[arg(long)]
        cores: Option<usize>,
        /// No per-second counter lines.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a capture through the configured chains offline.
    Process {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Capture to read (pcap or pcapng).
        #[arg(long = "in")]
        input: PathBuf,
        /// Capture to write (pcap) with every transmitted frame.
        #[arg(long = "out")]
        output: PathBuf,
        /// Port the frames arrive on (default: the first port).
        #[arg(long)]
        ingress: Option<String>,
    },
    /// Measure a chain in memory: generator → chain → sink.
    Bench {
        #[arg(long, default_value_t = 1)]
        cores: usize,
        #[arg(long, default_value_t = 10_000)]
        flows: u32,
        /// Packets per core.
        #[arg(long, default_value_t = 5_000_000)]
        packets: u64,
        #[arg(long, default_value_t = 64)]
        size: u16,
        #[arg(long, default_value_t = 100)]
        rules: usize,
        /// NFs in order, comma-separated: fw, mon, nat, counter.
        #[arg(long, default_value = "fw,mon")]
        chain: String,
        #[arg(long, default_value_t = 32)]
        burst: usize,
    },
    /// Generate probed traffic and measure what reaches the analyzer ports: throughput, loss,
    /// duplicates, reordering and latency percentiles.
    Gen {
        /// The configuration: generator and/or pcap (`read`) ports send, analyzer ports
        /// measure.
        #[arg(short, long)]
        config: PathBuf,
        /// Stop sending after this many seconds (default: when every generator reached its
        /// `count`; Ctrl-C also stops sending).
        #[arg(short, long)]
        duration: Option<f64>,
        /// Once sending has stopped, wait this many milliseconds without arrivals before
        /// ending.
        #[arg(long, default_value_t = 500)]
        drain_ms: u64,
        /// Write the report as JSON to this file (`-`: to stdout, with the text on stderr).
        #[arg(long)]
        json: Option<PathBuf>,
        /// No per-second counter lines.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The scale-out evaluation (SNF §9 on one host, virtual time): the real director over a
    /// synthetic trace with modelled workers; tables, results.json and SVG figures in --out.
    Eval {
        /// Directory for results.json, one table per experiment and the figures.
        #[arg(long, default_value = "eval-out")]
        out: PathBuf,
        /// A small trace (a few seconds instead of about a minute).
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run only these: allocation, state, flowlets, recovery, sensitivity (repeatable).
        #[arg(long = "experiment")]
        experiments: Vec<String>,
        /// Replay this capture (pcap or pcapng, whole frames) instead of the synthetic trace
        /// (the adversarial-flowlet experiment stays synthetic).
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Divide the capture's packet inter-arrival times by this (> 1 raises its load).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
    },
    /// Validate a configuration and build every NF without starting traffic.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Run the director of a scale-out deployment (`[scale]`): it owns the ports, steers
    /// flowlets to workers and launches and retires them.
    Director {
        #[arg(short, long)]
        config: PathBuf,
        /// Stop after this many seconds.
        #[arg(short, long)]
        duration: Option<f64>,
    },
    /// Run worker N of a scale-out deployment (normally started by the director).
    Worker {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long)]
        id: u16,
    },
    /// Run the output logger of worker N of a scale-out deployment (normally started by the
    /// director when `[scale] loggers` is set).
    Logger {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long)]
        id: u16,
    },
    /// Live rates of a running appliance (per core, chain and port), from its management
    /// endpoint's /status. Ctrl-C quits.
    Top {
        /// The appliance's management endpoint (`[management] listen`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        endpoint: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one view (after two samples) without escape codes, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Capture packets on a running appliance into a pcap file, through its management
    /// endpoint (POST /capture, then GET /capture/file). Ctrl-C stops the capture early.
    Capture {
        /// The appliance's management endpoint (`[management] listen`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        endpoint: String,
        /// The `[management] token` (default: the NFLET_TOKEN environment variable).
        #[arg(long)]
        token: Option<String>,
        /// Where: rx:PORT, tx:PORT, chain:NAME (comma-separated) or all (every port's rx).
        #[arg(long, default_value = "all")]
        point: String,
        /// tcp, udp, icmp or any.
        #[arg(long)]
        proto: Option<String>,
        /// An address or prefix, matching source or destination.
        #[arg(long)]
        host: Option<String>,
        /// A TCP/UDP port, matching source or destination.
        #[arg(long)]
        port: Option<u16>,
        /// Frames to capture at most.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Seconds to capture at most.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Frames per second at most (default: unlimited).
        #[arg(long)]
        rate: Option<u64>,
        /// Bytes kept of each frame.
        #[arg(long, default_value_t = 256)]
        snaplen: usize,
        /// The pcap file to write here.
        #[arg(long = "out")]
        output: PathBuf,
    },
}

fn load(path: &Option<PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Config::embedded().map_err(|e| e.to_string()),
    }
}

fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            log::warn!("cannot install a handler for signal {sig}: {e}");
        }
    }
    stop
}

fn main() -> ExitCode {
    if nflet_boot::is_init() {
        boot_main();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("nflet: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// nflet as PID 1 of a VM or box: boot duties, then the appliance on the configuration the
/// boot code found, then power-off (or halt/reboot after a fatal error). Never returns.
fn boot_main() -> ! {
    // The serial console: millisecond timestamps for boot timing, no colour codes.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .write_style(env_logger::WriteStyle::Never)
        .init();
    let boot = nflet_boot::start();
    let outcome = run_booted(&boot);
    boot.finish(outcome)
}

fn run_booted(boot: &nflet_boot::Boot) -> Result<(), String> {
    let src = boot.config();
    let origin = src.origin.to_string();
    let role = match (boot.cmdline.worker, boot.cmdline.logger) {
        (Some(id), _) => Some((Role::Worker, id)),
        (None, Some(id)) => Some((Role::Logger, id)),
        (None, None) => None,
    };
    if let Some((role, id)) = role {
        // A scale-out instance VM: the management NIC (DHCP unless configured) carries the
        // fabric; no data NICs, no hugepages.
        let text = src
            .text
            .ok_or("nflet.worker and nflet.logger need a configuration with a `[scale]` section")??;
        let cfg = Config::parse(&origin, &text).map_err(|e| e.to_string())?;
        let nic = match &cfg.management {
            Some(m) => nflet_boot::mgmt::Interface {
                name: m.iface.clone(),
                address: m.address,
                gateway: m.gateway,
                dhcp: m.dhcp,
            },
            None => {
                nflet_boot::mgmt::Interface { name: "eth0".into(), address: None, gateway: None, dhcp: true }
            }
        };
        boot.configure_management(&nic);
        log::info!(
            "boot: serving as {} {id}, {} ms after PID 1 started",
            role.command(),
            boot.started.elapsed().as_millis()
        );
        return nflet::scaleout::serve(&origin, &text, role, id, boot.cmdline.fabric_via, boot.stop_flag());
    }
    let cfg = match src.text {
        Some(text) => Config::parse(&origin, &text?).map_err(|e| e.to_string())?,
        None => Config::embedded().map_err(|e| e.to_string())?,
    };
    // Hugepages for DPDK: its packet buffers (~2.4 KiB each) plus 192 MiB for EAL's own
    // memory, rings and tables; capped by the boot code at a quarter of memory, overridden by
    // `nflet.hugepages`. State arenas use hugepages only when some are left over.
    let mbuf_pages = u64::from(cfg.dpdk.mbufs) * 2432 / (2 << 20) + 1;
    boot.reserve_hugepages(96 + mbuf_pages);
    let pci: Vec<String> = cfg
        .ports
        .iter()
        .filter_map(|p| match &p.kind {
            nflet::config::RawPortKind::Dpdk(d) if nflet::config::is_pci_address(&d.device) => {
                Some(d.device.clone())
            }
            _ => None,
        })
        .collect();
    boot.bind_nics(&pci).map_err(|e| e.to_string())?;
    if let Some(m) = &cfg.management {
        boot.configure_management(&nflet_boot::mgmt::Interface {
            name: m.iface.clone(),
            address: m.address,
            gateway: m.gateway,
            dhcp: m.dhcp,
        });
    }
    let observers = Observers::start(&cfg, true, boot.stop_flag())?;
    let feed = |s: &Summary| observers.feed(s);
    log::info!(
        "boot: running {} on {} core(s), {} ms after PID 1 started",
        cfg.source,
        cfg.settings.cores,
        boot.started.elapsed().as_millis()
    );
    let opts = RunOptions {
        duration: None,
        live: false,
        warmup: 0,
        offline: None,
        progress: observers.any().then_some(&feed as &(dyn Fn(&Summary) + Sync)),
        capture: observers.capture(),
        reload: Some(&observers.reload),
    };
    let summary = run(&cfg, &opts, boot.stop_flag()).map_err(|e| e.to_string())?;
    observers.finish(&summary);
    println!("{}", report::summary(&summary));
    Ok(())
}

fn dispatch(command: Command) -> Result<(), String> {
    match command {
        Command::Run { config, duration, cores, quiet } => {
            let mut cfg = load(&config)?;
            if let Some(c) = cores {
                if !(1..=64).contains(&c) {
                    return Err(format!("--cores: expected 1 to 64, got {c}"));
                }
                cfg.settings.cores = c;
                cfg.settings.cpus.clear();
            }
            log::info!("running {} on {} core(s); Ctrl-C stops", cfg.source, cfg.settings.cores);
            // The host's network configuration is not touched: the endpoint binds to the
            // management address if the host has it, else to 127.0.0.1.
            let stop = stop_on_signals();
            let observers = Observers::start(&cfg, false, Arc::clone(&stop))?;
            let feed = |s: &Summary| observers.feed(s);
            let opts = RunOptions {
                duration: duration.map(Duration::from_secs_f64),
                live: !quiet,
                warmup: 0,
                offline: None,
                progress: observers.any().then_some(&feed as &(dyn Fn(&Summary) + Sync)),
                capture: observers.capture(),
                reload: Some(&observers.reload),
            };
            let summary = run(&cfg, &opts, stop).map_err(|e| e.to_string())?;
            observers.finish(&summary);
            println!("{}", report::summary(&summary));
            Ok(())
        }
        Command::Director { config, duration } => {
            nflet::scaleout::run_director(&config, duration.map(Duration::from_secs_f64), stop_on_signals())
        }
        Command::Worker { config, id } => {
            nflet::scaleout::run_instance(&config, Role::Worker, id, stop_on_signals())
        }
        Command::Logger { config, id } => {
            nflet::scaleout::run_instance(&config, Role::Logger, id, stop_on_signals())
        }
        Command::Process { config, input, output, ingress } => {
            let mut cfg = load(&config)?;
            cfg.settings.cores = 1;
            cfg.settings.cpus.truncate(1);
            let ingress = match ingress {
                Some(name) => cfg.port_id(&name).ok_or_else(|| {
                    format!("--ingress: no port named `{name}`; ports are: {}", cfg.port_names().join(", "))
                })?,
                None => nflet_nfs::ids::PortId(0),
            };
            if cfg.ports.is_empty() {
                return Err(format!("{}: the configuration has no ports", cfg.source));
            }
            let total = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let progress = |s: &Summary| {
                let rx = s.total.rx_total();
                bar.set_position(rx.bytes.min(total));
                bar.set_message(format!("{} frames", rx.packets));
            };
            let opts = RunOptions {
                duration: None,
                live: false,
                warmup: 0,
                offline: Some(Offline { input: &input, ingress, output: &output }),
                progress: Some(&progress),
                capture: None,
                reload: None,
            };
            let summary = run(&cfg, &opts, stop_on_signals()).map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            println!("{}", report::summary(&summary));
            Ok(())
        }
        Command::Bench { cores, flows, packets, size, rules, chain, burst } => {
            let spec = BenchSpec {
                cores,
                flows,
                packets,
                size,
                rules,
                chain: chain.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                burst,
            };
            let r = bench(&spec).map_err(|e| e.to_string())?;
            println!("{r}");
            Ok(())
        }
        Command::Gen { config, duration, drain_ms, json, quiet } => {
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            if let Some(d) = duration {
                if !(d.is_finite() && d > 0.0) {
                    return Err(format!("--duration: expected a positive number of seconds, got {d}"));
                }
            }
            let opts = GenOptions {
                duration: duration.map(Duration::from_secs_f64),
                drain: Duration::from_millis(drain_ms),
                live: !quiet,
            };
            log::info!("generating from {}; Ctrl-C stops sending", cfg.source);
            let out = run_gen(cfg, &opts, stop_on_signals()).map_err(|e| e.to_string())?;
            let text = format!("{}\n{}", report::summary(&out.summary), out.report.text());
            match json {
                Some(path) if path.as_os_str() == "-" => {
                    eprintln!("{text}");
                    println!("{}", out.report.to_json());
                }
                Some(path) => {
                    println!("{text}");
                    std::fs::write(&path, out.report.to_json() + "\n")
                        .map_err(|e| format!("--json: cannot write {}: {e}", path.display()))?;
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        Command::Top { endpoint, interval, once } => top(&endpoint, interval, once),
        Command::Capture {
            endpoint,
            token,
            point,
            proto,
            host,
            port,
            count,
            seconds,
            rate,
            snaplen,
            output,
        } => {
            let mut q = vec![
                ("point", point),
                ("count", count.to_string()),
                ("seconds", seconds.to_string()),
                ("snaplen", snaplen.to_string()),
            ];
            q.extend(proto.map(|v| ("proto", v)));
            q.extend(host.map(|v| ("host", v)));
            q.extend(port.map(|v| ("port", v.to_string())));
            q.extend(rate.map(|v| ("rate", v.to_string())));
            let token = token.or_else(|| std::env::var("NFLET_TOKEN").ok()).ok_or_else(|| {
                "--token: the appliance's `[management] token` is needed (or set NFLET_TOKEN)".to_string()
            })?;
            capture(&endpoint, &token, &q, &output)
        }
        Command::Eval { out, quick, seed, experiments, pcap, time_scale } => {
            eval(&out, quick, seed, &experiments, pcap.as_deref(), time_scale)
        }
        Command::Check { config } => {
            let cfg = load(&config)?;
            let (pipelines, arenas) = build_pipelines(&cfg).map_err(|e| e.to_string())?;
            println!(
                "{}: ok — {} port(s), {} NF(s), {} chain(s), {} core(s); state per core {} MiB of {} MiB",
                cfg.source,
                cfg.ports.len(),
                cfg.nfs.len(),
                cfg.chains.len(),
                pipelines.len(),
                arenas.first().map_or(0, |a| a.used() >> 20),
                cfg.settings.arena_bytes >> 20
            );
            Ok(())
        }
    }
}

/// `nflet eval`: runs the experiments, prints the tables, writes the files.
fn eval(
    out: &std::path::Path,
    quick: bool,
    seed: u64,
    names: &[String],
    pcap: Option<&std::path::Path>,
    time_scale: f64,
) -> Result<(), String> {
    use nflet_scale::eval::{evaluate_on, EvalOptions, Experiment};
    let experiments = names
        .iter()
        .map(|n| Experiment::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let opts = EvalOptions { quick, seed, experiments };
    let started = std::time::Instant::now();
    if !(time_scale.is_finite() && time_scale > 0.0) {
        return Err(format!("eval: --time-scale must be a positive number, got {time_scale}"));
    }
    let captured = match pcap {
        Some(path) => {
            let c = nflet::eval_pcap::read_trace(path, time_scale)?;
            log::info!(
                "eval: {}: {} packets of {} flows over {:.1} ms ({} frames skipped)",
                path.display(),
                c.trace.packets.len(),
                c.trace.keys.len(),
                c.trace.end().0 as f64 / 1e6,
                c.skipped
            );
            Some(c.trace)
        }
        None => None,
    };
    let evaluation =
        evaluate_on(&opts, captured, &mut |run| log::info!("eval: {run}")).map_err(|e| e.to_string())?;
    let files = evaluation.files().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("eval: cannot create {}: {e}", out.display()))?;
    for f in &files {
        let path = out.join(&f.name);
        std::fs::write(&path, &f.contents)
            .map_err(|e| format!("eval: cannot write {}: {e}", path.display()))?;
    }
    println!("{}", evaluation.text());
    println!(
        "eval: {} experiment(s) in {:.1} s; {} file(s) in {}",
        evaluation.experiments.len(),
        started.elapsed().as_secs_f64(),
        files.len(),
        out.display()
    );
    Ok(())
}

/// Sleeps `d` in short steps; false when `stop` was raised meanwhile.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !stop.load(std::sync::atomic::Ordering::Relaxed)
}

fn status_sample(endpoint: &str) -> Result<nflet::top::Sample, String> {
    let a = request(endpoint, "GET", "/status", None).map_err(|e| e.to_string())?;
    if a.status != 200 {
        return Err(format!("{endpoint}: GET /status answered {}: {}", a.status, a.text()));
    }
    nflet::top::Sample::parse(&a.text())
}

/// `nflet top`.
fn top(endpoint: &str, interval: f64, once: bool) -> Result<(), String> {
    if !(interval.is_finite() && (0.1..=3600.0).contains(&interval)) {
        return Err(format!("--interval: expected 0.1 to 3600 seconds, got {interval}"));
    }
    let stop = stop_on_signals();
    let every = Duration::from_secs_f64(interval);
    let mut prev = status_sample(endpoint)?;
    loop {
        if !nap(every, &stop) {
            return Ok(());
        }
        let cur = status_sample(endpoint)
            .map_err(|e| format!("{e}\nthe appliance went away (or stopped answering); nflet top ends"))?;
        let view = nflet::top::render(&prev, &cur, endpoint);
        if once {
            print!("{view}");
            return Ok(());
        }
        print!("{}{view}\n(refreshing every {interval} s; Ctrl-C quits)\n", nflet::top::CLEAR);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        prev = cur;
    }
}

/// Percent-encodes a query value (everything but unreserved characters and `:`, `/`, `,`).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b',' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `nflet capture`: start a capture, wait for it to end (Ctrl-C stops it), fetch the file.
fn capture(
    endpoint: &str,
    token: &str,
    query: &[(&str, String)],
    out: &std::path::Path,
) -> Result<(), String> {
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    let call = |method: &str, target: &str| -> Result<Answer, String> {
        request(endpoint, method, target, Some(token)).map_err(|e| e.to_string())
    };
    let started = call("POST", &format!("/capture?{}", q.join("&")))?;
    if started.status != 201 {
        return Err(format!("the appliance refused the capture ({}): {}", started.status, started.text()));
    }
    let doc: serde_json::Value = serde_json::from_str(&started.text()).unwrap_or_default();
    eprintln!("capturing to {} on the appliance; Ctrl-C stops early", doc["file"].as_str().unwrap_or("?"));
    let stop = stop_on_signals();
    let mut stopping = false;
    let state = loop {
        if stopping {
            std::thread::sleep(Duration::from_millis(100));
        } else if !nap(Duration::from_millis(200), &stop) {
            stopping = true;
            let _ = call("POST", "/capture/stop")?;
        }
        let a = call("GET", "/capture")?;
        let doc: serde_json::Value = serde_json::from_str(&a.text())
            .map_err(|e| format!("GET /capture answered {}: {e}", a.status))?;
        if doc["state"] != "running" {
            break doc;
        }
    };
    let file = call("GET", "/capture/file")?;
    if file.status != 200 {
        return Err(format!("GET /capture/file answered {}: {}", file.status, file.text()));
    }
    std::fs::write(out, &file.body).map_err(|e| format!("--out: cannot write {}: {e}", out.display()))?;
    eprintln!(
        "{}: {} frame(s) written, {} skipped (ended: {})",
        out.display(),
        state["written"],
        state["capture_skipped"],
        state["ended"].as_str().unwrap_or("?")
    );
    Ok(())
}
