//! A test rig (test builds only): two real core loops in one process, each with a scripted
//! `lan` (port 0) and `wan` (port 1) receive queue and capturing transmit queues, joined by
//! software steering — what the multi-core steering tests of NAT and IPsec run on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::time::MonotonicClock;

use super::build_pipelines;
use super::core::{Control, CoreLoop, Steering};
use super::select::ChainSelector;
use super::stats::{CoreStats, Snapshot};
use crate::config::Config;
use crate::port::{BufPool, PktBuf, RxQueue, RxStatus, TxQueue};

pub type Frames = Arc<Mutex<Vec<Vec<u8>>>>;
/// Produces a queue's frames once they are ready (`None`: not yet).
pub type Loader = Box<dyn FnMut() -> Option<Vec<Vec<u8>>> + Send>;

/// A receive queue that hands out its frames (filled by `load` when first polled) and is then
/// exhausted. Reports itself as spreading flows on its own, so only NF steering moves frames.
pub struct Script {
    pub frames: VecDeque<Vec<u8>>,
    pub load: Option<Loader>,
}

impl Script {
    pub fn frames(frames: impl IntoIterator<Item = Vec<u8>>) -> Script {
        Script { frames: frames.into_iter().collect(), load: None }
    }

    pub fn later(load: Loader) -> Script {
        Script { frames: VecDeque::new(), load: Some(load) }
    }
}

impl RxQueue for Script {
    fn rx_burst(&mut self, pool: &mut BufPool, out: &mut Vec<PktBuf>, max: usize) -> RxStatus {
        if let Some(load) = self.load.as_mut() {
            match load() {
                Some(frames) => {
                    self.frames.extend(frames);
                    self.load = None;
                }
                None => return RxStatus::Received(0),
            }
        }
        if self.frames.is_empty() {
            return RxStatus::Exhausted;
        }
        let mut n = 0;
        while n < max {
            let Some(f) = self.frames.front() else { break };
            let Some(mut b) = pool.get() else { break };
            assert!(b.fill(f));
            self.frames.pop_front();
            out.push(b);
            n += 1;
        }
        RxStatus::Received(n)
    }

    fn steered(&self) -> bool {
        true
    }
}

/// A transmit queue that keeps copies of what it sends.
struct Capture(Frames);

impl TxQueue for Capture {
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        let n = pkts.len();
        let mut got = self.0.lock().unwrap();
        for b in pkts.drain(..) {
            got.push(b.data().to_vec());
            pool.put(b);
        }
        n
    }
}

/// What each core transmitted, per port, and its last published snapshot.
pub struct Outputs {
    pub lan_tx: Vec<Frames>,
    pub wan_tx: Vec<Frames>,
    pub publish: Vec<Arc<spin::Mutex<Snapshot>>>,
}

/// Runs `config` (two cores, ports `lan` and `wan`) until every script is exhausted.
/// `inputs(core, &outputs)` gives each core's (lan, wan) receive scripts; a script may wait
/// on what the other core transmits.
pub fn run(
    config: &Config,
    inputs: impl Fn(usize, &Outputs) -> (Script, Script),
) -> (Vec<CoreStats>, Outputs) {
    let (pipelines, _arenas) = build_pipelines(config).unwrap();
    let out = Outputs {
        lan_tx: (0..2).map(|_| Frames::default()).collect(),
        wan_tx: (0..2).map(|_| Frames::default()).collect(),
        publish: (0..2).map(|_| Arc::default()).collect(),
    };
    let control = Arc::new(Control::default());
    control.live_inputs.store(2, std::sync::atomic::Ordering::Release);
    let steering = Steering { inbound: (0..2).map(|_| Arc::new(ArrayQueue::new(1024))).collect() };
    let exchange = Arc::new(ArrayQueue::new(4096));
    let loops: Vec<CoreLoop> = pipelines
        .into_iter()
        .enumerate()
        .map(|(c, pipeline)| {
            let (lan, wan) = inputs(c, &out);
            CoreLoop {
                mailbox: Arc::default(),
                tap: crate::capture::Tap::off(),
                id: CoreId(c as u16),
                cores: 2,
                rx: vec![(PortId(0), Box::new(lan) as Box<dyn RxQueue>), (PortId(1), Box::new(wan))],
                tx: vec![
                    Some(Box::new(Capture(Arc::clone(&out.lan_tx[c]))) as Box<dyn TxQueue>),
                    Some(Box::new(Capture(Arc::clone(&out.wan_tx[c])))),
                ],
                pool: BufPool::with_exchange(1024, 2048, Arc::clone(&exchange)),
                pipeline,
                chains: ChainSelector::new(config),
                policy: config.parse,
                burst: 32,
                idle_sleep: Duration::from_micros(10),
                steering: Some(steering.clone()),
                control: Arc::clone(&control),
                publish: Arc::clone(&out.publish[c]),
                warmup: 0,
            }
        })
        .collect();
    let clock = MonotonicClock::new();
    let stats = std::thread::scope(|s| {
        let handles: Vec<_> = loops
            .into_iter()
            .map(|l| {
                let clock = clock.clone();
                s.spawn(move || l.run(&clock))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (stats, out)
}
