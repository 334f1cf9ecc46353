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
use nflet::observe::Observers;
use nflet::report;
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
    /// Validate a configuration and build every NF without starting traffic.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
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
                reload: Some(&observers.reload),
            };
            let summary = run(&cfg, &opts, stop).map_err(|e| e.to_string())?;
            observers.finish(&summary);
            println!("{}", report::summary(&summary));
            Ok(())
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
