//! The state directory: where a core's arena keeps its tables when they must outlive the
//! process (hitless restart).
//!
//! Layout of `state_dir` (see the [`arena`](super::arena) module doc for what is kept):
//!
//! ```text
//! state_dir/lock                      flock'ed by the running instance
//! state_dir/clock                     runtime clock at the last save: "<ns> <unix ns>"
//! state_dir/core<N>/<table>           the table's slots, exactly as mapped
//! state_dir/core<N>/<table>.meta      its layout (magic, version, slot type, sizes, cores)
//! ```
//!
//! A region is re-attached only when its `.meta` says the same as the layout asked for now;
//! anything else (another slot type or size, another capacity, another core count, a newer or
//! older [`LAYOUT_VERSION`], a missing or unreadable file) starts that table zeroed, with one
//! warning naming both layouts.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use super::arena::StateError;
use crate::ids::CoreId;
use crate::time::Nanos;

/// Version of the persisted state layout. Bump it whenever a slot type (`table_entry!`), the
/// slot header, or the table's slot arithmetic changes meaning without changing size: the
/// type name and size catch most changes, this catches the rest.
pub const LAYOUT_VERSION: u32 = 1;

const MAGIC: &str = "nflet-state";

/// An open, exclusively locked state directory.
pub struct StateDir {
    path: PathBuf,
    cores: usize,
    /// Page size of the file system (the huge page size on hugetlbfs).
    page: usize,
    huge: bool,
    /// (core, table) of every region opened by this instance, for [`StateDir::prune`].
    used: std::sync::Mutex<std::collections::HashSet<(u16, String)>>,
    _lock: Flock<File>,
}

impl std::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDir")
            .field("path", &self.path)
            .field("cores", &self.cores)
            .field("page", &self.page)
            .field("huge", &self.huge)
            .finish()
    }
}

/// What a region's `.meta` file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub version: u32,
    pub slot_type: String,
    pub slot_size: usize,
    pub slots: usize,
    pub capacity: usize,
    pub cores: usize,
    pub bytes: usize,
}

impl Layout {
    fn to_text(&self) -> String {
        format!(
            "magic = {MAGIC}\nversion = {}\ntype = {}\nsize = {}\nslots = {}\ncapacity = {}\ncores = {}\nbytes = {}\n",
            self.version, self.slot_type, self.slot_size, self.slots, self.capacity, self.cores, self.bytes
        )
    }

    fn parse(text: &str) -> Option<Layout> {
        let get = |k: &str| {
            text.lines().find_map(|l| l.split_once(" = ").filter(|(key, _)| *key == k).map(|(_, v)| v))
        };
        if get("magic")? != MAGIC {
            return None;
        }
        Some(Layout {
            version: get("version")?.parse().ok()?,
            slot_type: get("type")?.to_string(),
            slot_size: get("size")?.parse().ok()?,
            slots: get("slots")?.parse().ok()?,
            capacity: get("capacity")?.parse().ok()?,
            cores: get("cores")?.parse().ok()?,
            bytes: get("bytes")?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layout {} / {} ({} bytes) x {} slots / capacity {} / {} core(s)",
            self.version, self.slot_type, self.slot_size, self.slots, self.capacity, self.cores
        )
    }
}

/// Where a region's memory came from.
#[derive(Debug)]
pub(super) enum Opened {
    /// The file held state of the same layout: its contents are kept.
    Attached(File),
    /// A new, zeroed file (`why`: what was there before, for the log).
    Cold(File, Option<String>),
}

impl StateDir {
    /// Opens (creating it if needed) and locks `path` for an appliance of `cores` cores.
    /// Fails if another process holds the lock: two instances must never share state.
    pub fn open(path: &Path, cores: usize) -> Result<StateDir, StateError> {
        let io = |what: &str, source: std::io::Error| StateError::Dir {
            path: path.to_path_buf(),
            detail: format!("{what}: {source}"),
        };
        std::fs::create_dir_all(path).map_err(|e| io("creating it", e))?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))
            .map_err(|e| io("opening the lock file", e))?;
        let mut lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            StateError::Dir {
                path: path.to_path_buf(),
                detail: format!(
                    "locked by another nflet ({errno}); two instances cannot share state — give this \
                     one its own `state_dir` or stop the other"
                ),
            }
        })?;
        // The holder's pid, for people (the lock itself is the flock).
        let _ = lock.set_len(0);
        let _ = writeln!(*lock, "{}", std::process::id());
        let (page, huge) = match nix::sys::statfs::statfs(path) {
            Ok(s) if s.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC => {
                (usize::try_from(s.block_size()).unwrap_or(2 << 20).max(4096), true)
            }
            _ => (4096, false),
        };
        Ok(StateDir { path: path.to_path_buf(), cores, page, huge, used: Default::default(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Page size that region files are rounded to (huge page size on hugetlbfs).
    pub fn page(&self) -> usize {
        self.page
    }

    /// True when the directory is on hugetlbfs.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    fn core_dir(&self, core: CoreId) -> PathBuf {
        self.path.join(format!("core{}", core.0))
    }

    /// The file of region `table` on `core`: re-attached when its recorded layout is `want`,
    /// otherwise created zeroed at `want.bytes` (and its new layout recorded).
    pub(super) fn open_region(&self, core: CoreId, table: &str, want: &Layout) -> Result<Opened, StateError> {
        if table.is_empty() || table.starts_with('.') || table.contains(['/', '\0']) {
            return Err(StateError::Size {
                table: table.to_string(),
                detail: "a table in a state directory needs a file name (no `/`, no leading `.`)".to_string(),
            });
        }
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert((core.0, table.to_string()));
        let dir = self.core_dir(core);
        let data = dir.join(table);
        let meta = dir.join(format!("{table}.meta"));
        let io = |what: &str, p: &Path, source: std::io::Error| StateError::Dir {
            path: p.to_path_buf(),
            detail: format!("{what}: {source}"),
        };
        std::fs::create_dir_all(&dir).map_err(|e| io("creating it", &dir, e))?;
        let before = read_text(&meta);
        let old = before.as_deref().map(Layout::parse);
        let size = std::fs::metadata(&data).ok().map(|m| m.len());
        let why = match (&old, size) {
            (Some(Some(old)), Some(len)) if old == want && len == want.bytes as u64 => {
                let file = File::options().read(true).write(true).open(&data);
                match file {
                    Ok(f) => return Ok(Opened::Attached(f)),
                    Err(e) => Some(format!("its file could not be opened ({e})")),
                }
            }
            (Some(Some(old)), Some(len)) if old == want => {
                Some(format!("its file has {len} bytes instead of {}", want.bytes))
            }
            (Some(Some(old)), _) => Some(format!("written by {old}")),
            (Some(None), _) => Some("its .meta file is unreadable".to_string()),
            (None, Some(_)) => Some("its .meta file is missing".to_string()),
            (None, None) => None,
        };
        // Cold start: forget the layout first, so a crash half-way leaves no stale `.meta`
        // vouching for a new file.
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&data);
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data)
            .map_err(|e| io("creating it", &data, e))?;
        f.set_len(want.bytes as u64).map_err(|e| io("sizing it", &data, e))?;
        self.write_atomic(&meta, &want.to_text()).map_err(|e| io("writing it", &meta, e))?;
        Ok(Opened::Cold(f, why))
    }

    /// Removes the files of tables this instance did not open (NFs or cores no longer
    /// configured), so their memory goes back to the system; call once every core's tables
    /// exist. Returns the names removed (`core<N>/<table>`).
    pub fn prune(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.path) else { return removed };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(core) = name.strip_prefix("core").and_then(|n| n.parse::<u16>().ok()) else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(e.path()) else { continue };
            for f in files.filter_map(Result::ok) {
                let file = f.file_name().to_string_lossy().into_owned();
                let table = file.strip_suffix(".meta").unwrap_or(&file);
                let stale = !used.contains(&(core, table.to_string()));
                if stale && std::fs::remove_file(f.path()).is_ok() && !file.ends_with(".meta") {
                    removed.push(format!("{name}/{file}"));
                }
            }
            // Empty now (a core no longer configured): gone too; otherwise this fails.
            let _ = std::fs::remove_dir(e.path());
        }
        removed.sort();
        removed
    }

    /// The runtime clock to start from: the time saved by the previous instance plus the
    /// wall-clock time that passed since it saved it, so timers run on as if the appliance
    /// had never stopped. `None` when there is no (readable) saved clock.
    pub fn continued_clock(&self) -> Option<Nanos> {
        let text = read_text(&self.path.join("clock"))?;
        let mut w = text.split_whitespace();
        let mono: u64 = w.next()?.parse().ok()?;
        let wall: u64 = w.next()?.parse().ok()?;
        let down = wall_ns().saturating_sub(wall);
        Some(Nanos(mono.saturating_add(down)))
    }

    /// Saves the runtime clock (`now`) with the current wall-clock time.
    pub fn save_clock(&self, now: Nanos) -> std::io::Result<()> {
        self.write_atomic(&self.path.join("clock"), &format!("{} {}\n", now.0, wall_ns()))
    }

    /// Writes `text` to a temporary file beside `path` and renames it over `path`. hugetlbfs
    /// files cannot be written with write(2): there the text goes in through a mapping of one
    /// (huge) page, NUL-padded.
    fn write_atomic(&self, path: &Path, text: &str) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if self.huge {
            let _ = std::fs::remove_file(&tmp);
            let f = File::options().read(true).write(true).create_new(true).open(&tmp)?;
            f.set_len(self.page as u64)?;
            let mut map = super::arena::map_file(&f, self.page)?;
            if let Some(dst) = map.get_mut(..text.len()) {
                dst.copy_from_slice(text.as_bytes());
            }
        } else {
            std::fs::write(&tmp, text)?;
        }
        std::fs::rename(&tmp, path)
    }
}

/// Reads a small text file written by [`StateDir::write_atomic`] (NUL padding removed).
fn read_text(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes.get(..end)?.to_vec()).ok()
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
