//! The per-core state arena: the memory every state table of a core is carved from.
//!
//! Regions are mapped with memmap2, on 2 MiB hugepages when the system has them reserved and
//! on normal pages otherwise (with one warning per arena). Table contents are plain old data
//! addressed by index, never by pointer, so a region's bytes mean the same thing wherever it
//! is mapped — the property a restart needs to re-attach state, and the scale-out code needs to
//! ship it to another instance.
//!
//! The arena enforces a byte budget per core: a configuration that asks for more state than
//! the core was given fails at start-up with the numbers, not at the first full table.
//!
//! # Persistent state (hitless restart)
//!
//! An arena given a [`StateDir`] ([`Arena::with_state_dir`]) maps every region from a file,
//! `state_dir/core<N>/<table>`, shared (`MAP_SHARED`) so the table's bytes *are* the file's
//! pages: on tmpfs (`/dev/shm`) or hugetlbfs they stay in memory after the process exits, and
//! the next instance maps the same pages again — nothing is copied at stop or start. Beside
//! each file, `<table>.meta` records the layout the bytes were written with: a magic string,
//! [`LAYOUT_VERSION`](super::persist::LAYOUT_VERSION), the slot type's name
//! (`std::any::type_name`) and size, the slot count, the table's capacity and the core count.
//! A region whose recorded layout equals the one asked for now is re-attached with its
//! contents (logged at info); any difference starts it zeroed, logged as a warning
//! `state of <core>/<table>: written by <old layout>, now <new layout>: cold start`. Tables
//! recount their entries on re-attach ([`FlowTable`](super::FlowTable)); hashes are fixed
//! functions of the key (no per-process seed), so lookups find restored entries.
//!
//! The file system decides the pages: hugetlbfs gives huge pages (files are sized in its page
//! size), tmpfs normal ones; [`Backing`] does not apply. Files of tables that the new
//! configuration no longer has are removed once every core's tables exist
//! ([`StateDir::prune`]), so their memory is not held forever.
//!
//! The files are private to one process: [`StateDir::open`] takes an exclusive `flock` on
//! `state_dir/lock` for the life of the appliance, and a second instance on the same directory
//! fails to start with that reason. An arena maps each region name once. Those two facts are
//! the invariant of the one `unsafe` function here, [`map_file`] (memmap2 cannot know that no
//! one else writes a file it maps). A tool that writes the files behind the lock's back breaks
//! it; reading them (`hexdump`) is harmless.
//!
//! What restart keeps is only what lives in regions: per-flow tables. Counters, release
//! shares and eventual deltas are rebuilt; NFs whose global state must agree with restored
//! tables reconcile it once every core's instance exists
//! ([`NetworkFunction::after_init`](crate::nf::NetworkFunction::after_init); the NAT takes
//! restored mappings' public ports out of its pool). A process killed in the middle of a table
//! update (SIGKILL, not the SIGTERM of a clean stop, which lets bursts finish) may leave that
//! one entry half-moved; every access is bounds-checked, so at worst an entry is lost.

use bytemuck::{Pod, Zeroable};
use memmap2::{MmapMut, MmapOptions};
use std::collections::HashSet;
use std::fs::File;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use super::persist::{Layout, Opened, StateDir, LAYOUT_VERSION};
use crate::ids::CoreId;

const HUGE_PAGE: usize = 2 << 20;
const PAGE: usize = 4096;

/// How an arena obtains memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// 2 MiB hugepages when available, normal pages (with a warning) otherwise.
    #[default]
    PreferHuge,
    /// Normal pages only (tests, tiny tables).
    Normal,
}

/// Errors creating state.
#[derive(Debug)]
pub enum StateError {
    /// The arena's byte budget is exhausted.
    Budget { core: CoreId, table: String, wanted: usize, left: usize },
    /// The kernel refused the mapping.
    Map { core: CoreId, table: String, bytes: usize, source: std::io::Error },
    /// A size overflowed or a capacity of zero was asked for.
    Size { table: String, detail: String },
    /// The state directory (or a file in it) could not be used.
    Dir { path: PathBuf, detail: String },
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Budget { core, table, wanted, left } => write!(
                f,
                "{core}: state table `{table}` needs {wanted} bytes but only {left} are left in \
                 the core's state arena; lower the table capacity or raise `state_arena_mib`"
            ),
            StateError::Map { core, table, bytes, source } => {
                write!(f, "{core}: mapping {bytes} bytes for state table `{table}`: {source}")
            }
            StateError::Size { table, detail } => write!(f, "state table `{table}`: {detail}"),
            StateError::Dir { path, detail } => write!(f, "state directory {}: {detail}", path.display()),
        }
    }
}

impl std::error::Error for StateError {}

/// A core's state arena.
#[derive(Debug)]
pub struct Arena {
    core: CoreId,
    backing: Backing,
    budget: usize,
    used: usize,
    huge_regions: usize,
    normal_regions: usize,
    warned: bool,
    state: Option<Arc<StateDir>>,
    names: HashSet<String>,
    attached: usize,
    cold: usize,
}

impl Arena {
    pub fn new(core: CoreId, budget_bytes: usize, backing: Backing) -> Arena {
        Arena {
            core,
            backing,
            budget: budget_bytes,
            used: 0,
            huge_regions: 0,
            normal_regions: 0,
            warned: false,
            state: None,
            names: HashSet::new(),
            attached: 0,
            cold: 0,
        }
    }

    /// Keeps this arena's regions in files of `dir` (see the module doc).
    pub fn with_state_dir(mut self, dir: Arc<StateDir>) -> Arena {
        self.state = Some(dir);
        self
    }

    /// (regions re-attached with their contents, regions started zeroed) from a state dir.
    pub fn persisted(&self) -> (usize, usize) {
        (self.attached, self.cold)
    }

    pub fn core(&self) -> CoreId {
        self.core
    }

    /// Bytes handed out so far (rounded to pages).
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// (regions on hugepages, regions on normal pages).
    pub fn page_mix(&self) -> (usize, usize) {
        (self.huge_regions, self.normal_regions)
    }

    /// A zeroed region of `len` values of `T`, charged to the budget.
    pub fn region<T: Pod>(&mut self, table: &str, len: usize) -> Result<Region<T>, StateError> {
        self.region_for(table, len, len)
    }

    /// [`Arena::region`] for a table of `capacity` entries. With a state directory the region
    /// is re-attached when it was written with the same layout (capacity included), and
    /// [`Region::restored`] says so; it is zeroed otherwise.
    pub fn region_for<T: Pod>(
        &mut self,
        table: &str,
        len: usize,
        capacity: usize,
    ) -> Result<Region<T>, StateError> {
        let bytes =
            len.checked_mul(std::mem::size_of::<T>()).filter(|b| *b > 0).ok_or_else(|| StateError::Size {
                table: table.to_string(),
                detail: format!("cannot size a region of {len} entries"),
            })?;
        if let Some(dir) = self.state.clone() {
            return self.file_region(&dir, table, len, bytes, capacity);
        }
        let want_huge = self.backing == Backing::PreferHuge && bytes >= HUGE_PAGE / 2;
        let rounded = round_up(bytes, if want_huge { HUGE_PAGE } else { PAGE });
        let left = self.budget.saturating_sub(self.used);
        if rounded > left {
            return Err(StateError::Budget {
                core: self.core,
                table: table.to_string(),
                wanted: rounded,
                left,
            });
        }
        let map = if want_huge {
            match MmapOptions::new().len(rounded).huge(Some(21)).map_anon() {
                Ok(m) => {
                    self.huge_regions += 1;
                    m
                }
                Err(e) => {
                    if !self.warned {
                        log::warn!(
                            "{}: no 2 MiB hugepages for state ({e}); using normal pages \
                             (reserve some: echo 512 > /proc/sys/vm/nr_hugepages)",
                            self.core
                        );
                        self.warned = true;
                    }
                    self.map_normal(table, rounded)?
                }
            }
        } else {
            self.map_normal(table, rounded)?
        };
        self.used += rounded;
        Ok(Region { map, len, restored: false, _t: PhantomData })
    }

    fn file_region<T: Pod>(
        &mut self,
        dir: &StateDir,
        table: &str,
        len: usize,
        bytes: usize,
        capacity: usize,
    ) -> Result<Region<T>, StateError> {
        // Two mappings of one file would alias two tables (and break `map_file`'s invariant).
        if !self.names.insert(table.to_string()) {
            return Err(StateError::Size {
                table: table.to_string(),
                detail: format!("a second table of this name on {}", self.core),
            });
        }
        let rounded = round_up(bytes, dir.page());
        let left = self.budget.saturating_sub(self.used);
        if rounded > left {
            return Err(StateError::Budget {
                core: self.core,
                table: table.to_string(),
                wanted: rounded,
                left,
            });
        }
        let want = Layout {
            version: LAYOUT_VERSION,
            slot_type: std::any::type_name::<T>().to_string(),
            slot_size: std::mem::size_of::<T>(),
            slots: len,
            capacity,
            cores: dir.cores(),
            bytes: rounded,
        };
        let (file, restored) = match dir.open_region(self.core, table, &want)? {
            Opened::Attached(f) => {
                log::info!("state of {}/{table} re-attached from {}", self.core, dir.path().display());
                self.attached += 1;
                (f, true)
            }
            Opened::Cold(f, why) => {
                if let Some(why) = why {
                    log::warn!("state of {}/{table}: {why}, now {want}: cold start", self.core);
                }
                self.cold += 1;
                (f, false)
            }
        };
        let map = map_file(&file, rounded).map_err(|source| StateError::Map {
            core: self.core,
            table: table.to_string(),
            bytes: rounded,
            source,
        })?;
        if dir.is_huge() {
            self.huge_regions += 1;
        } else {
            self.normal_regions += 1;
        }
        self.used += rounded;
        Ok(Region { map, len, restored, _t: PhantomData })
    }

    fn map_normal(&mut self, table: &str, bytes: usize) -> Result<MmapMut, StateError> {
        let m = MmapOptions::new().len(bytes).map_anon().map_err(|source| StateError::Map {
            core: self.core,
            table: table.to_string(),
            bytes,
            source,
        })?;
        self.normal_regions += 1;
        Ok(m)
    }
}

/// Maps `len` bytes of `file`, shared and writable.
#[allow(unsafe_code)]
pub(super) fn map_file(file: &File, len: usize) -> std::io::Result<MmapMut> {
    // SAFETY: memmap2 asks that the file is not modified by anything else while the mapping
    // lives (it would change the bytes under our slices). `file` is in a state directory this
    // process holds the exclusive flock of (`StateDir::open`) for as long as the arena lives,
    // and each file is mapped once (an arena refuses a second region of the same name; the
    // small `.meta`/`clock` files are mapped only while being written, then renamed): no
    // other process or mapping writes it. Contents are plain old data (`Pod`), so any bytes
    // found in the file are valid values.
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to).saturating_mul(to)
}

/// A typed, zero-initialised run of `T` mapped for one table.
#[derive(Debug)]
pub struct Region<T> {
    map: MmapMut,
    len: usize,
    restored: bool,
    _t: PhantomData<T>,
}

impl<T: Pod + Zeroable> Region<T> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the region was re-attached with the contents a previous instance left.
    pub fn restored(&self) -> bool {
        self.restored
    }

    /// The values. Mappings are page-aligned and sized for `len` values, so the cast holds.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        let bytes = self.map.get(..self.len * std::mem::size_of::<T>()).unwrap_or(&[]);
        bytemuck::cast_slice(bytes)
    }

    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        let n = self.len * std::mem::size_of::<T>();
        let bytes = self.map.get_mut(..n).unwrap_or(&mut []);
        bytemuck::cast_slice_mut(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_zeroed_and_typed() {
        let mut a = Arena::new(CoreId(0), 1 << 20, Backing::Normal);
        let mut r: Region<u64> = a.region("t", 1000).unwrap();
        assert_eq!(r.len(), 1000);
        assert!(r.as_slice().iter().all(|v| *v == 0));
        r.as_mut_slice()[999] = 7;
        assert_eq!(r.as_slice()[999], 7);
        assert_eq!(a.used(), 8192);
    }

    #[test]
    fn budget_is_enforced_with_a_clear_error() {
        let mut a = Arena::new(CoreId(1), 8192, Backing::Normal);
        let _r: Region<u8> = a.region("small", 4096).unwrap();
        let e = a.region::<u8>("big", 8192).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("core1") && msg.contains("big") && msg.contains("4096"), "{msg}");
    }

    #[test]
    fn zero_sized_request_is_refused() {
        let mut a = Arena::new(CoreId(0), 1 << 20, Backing::Normal);
        assert!(matches!(a.region::<u64>("z", 0), Err(StateError::Size { .. })));
    }

    #[test]
    fn prefer_huge_falls_back_to_normal_pages() {
        // Works whether or not hugepages are reserved on the machine running the test.
        let mut a = Arena::new(CoreId(0), 64 << 20, Backing::PreferHuge);
        let r: Region<u64> = a.region("big", (4 << 20) / 8).unwrap();
        assert_eq!(r.as_slice().len(), (4 << 20) / 8);
        let (h, n) = a.page_mix();
        assert_eq!(h + n, 1);
    }
}
