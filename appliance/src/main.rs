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
use nflet::report;

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
            let opts = RunOptions {
                duration: duration.map(Duration::from_secs_f64),
                live: !quiet,
                warmup: 0,
                offline: None,
                progress: None,
            };
            let summary = run(&cfg, &opts, stop_on_signals()).map_err(|e| e.to_string())?;
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
