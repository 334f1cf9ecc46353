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

use bytemuck::{Pod, Zeroable};
use memmap2::{MmapMut, MmapOptions};
use std::marker::PhantomData;

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
        }
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
        let bytes =
            len.checked_mul(std::mem::size_of::<T>()).filter(|b| *b > 0).ok_or_else(|| StateError::Size {
                table: table.to_string(),
                detail: format!("cannot size a region of {len} entries"),
            })?;
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
        Ok(Region { map, len, _t: PhantomData })
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

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to).saturating_mul(to)
}

/// A typed, zero-initialised run of `T` mapped for one table.
#[derive(Debug)]
pub struct Region<T> {
    map: MmapMut,
    len: usize,
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
