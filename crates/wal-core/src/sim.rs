//! A simulated file system for crash and fault tests (feature `test-util`).
//!
//! [`SimFs`] implements [`Vfs`] in memory and keeps two images of everything:
//!
//! * the **written** image: what reads see, i.e. the page cache and the
//!   in-memory directory tree of a running system;
//! * the **durable** image: what is on the platter, i.e. what survives a
//!   power loss.
//!
//! [`SimFs::crash`] throws the written image away and returns a new file
//! system holding only the durable one, as pulling the power would. Every
//! handle from before the crash is dead: its operations fail.
//!
//! # The durability model
//!
//! It follows POSIX as Linux file systems implement it, with the pessimistic
//! choice wherever POSIX leaves room:
//!
//! * **File data** becomes durable only at [`VfsFile::sync_data`] of that
//!   file. The length set by [`VfsFile::set_len`] or by an extending write is
//!   file data in this sense (`fdatasync` persists what is needed to read the
//!   data back).
//! * **Directory entries** (create, rename, remove) change the written
//!   namespace at once and become durable only at [`Vfs::sync_dir`] of the
//!   directory holding them. A file whose data was synced but whose directory
//!   entry never was is gone after a crash. A rename across directories needs
//!   both directories synced. Directories made by [`Vfs::create_dir_all`] are
//!   entries of their parents like files are; the root (`/`, or the empty
//!   path for relative paths) always exists.
//! * **Names map to inodes**; open handles hold the inode. Removing or
//!   renaming over a file that is open keeps the handle working on the old
//!   inode, as on Unix.
//! * **A failed `sync_data`** behaves as Linux after an `fsync` error: the
//!   data written since the last good sync stays readable in the page cache,
//!   but its pages are marked clean, so no later sync writes them. If a
//!   later sync succeeds, those bytes read back as zeroes after a crash (or
//!   as the older durable bytes). This is why a log must fail-stop after a
//!   failed sync rather than retry it.
//! * **A failed `sync_dir`** makes nothing durable; the directory changes stay
//!   pending and a later successful `sync_dir` makes them durable.
//! * **Unsynced changes in a crash**: [`SimFs::crash`] keeps none of them.
//!   The torn crashes below keep some: any subset of a directory's pending
//!   changes, and of a file's unsynced data either a prefix in file-offset
//!   order ([`SimFs::crash_torn`]) or any subset of its 4096-byte pages
//!   ([`SimFs::crash_reordered`]: a drive may persist a later page of a
//!   write and not an earlier one).
//!
//! # Torn crashes
//!
//! Real disks may write back some unsynced data before the power goes.
//! [`SimFs::crash_torn`] models that, deterministically from a seed:
//!
//! * for each directory, each of its pending (unsynced) entry changes is
//!   independently kept or lost, and the kept ones apply in the order they
//!   were made. Real file systems may persist any subset of unsynced
//!   directory operations (a later removal without an earlier one), so a
//!   log that needs them in order must `sync_dir` between them. One change
//!   is atomic: a rename within one directory is never split (across
//!   directories it is two changes, one in each);
//! * for each file, a random prefix, in file-offset order, of what was
//!   written since its last sync is kept: from the first byte the sync would
//!   change, up to a random point, the file holds the written bytes, and
//!   after it the durable ones (an append grows the file by the kept part; a
//!   write into space the file already had, such as preallocated zeroes,
//!   replaces the durable bytes it reached). The kept part may be followed by
//!   a run of junk (zeroes or random bytes) that stands for blocks whose size
//!   was recorded but whose data never arrived, or a sector torn mid-write.
//!   The junk never extends past the written length. A length cut since the
//!   last sync is never kept.
//!
//! [`SimFs::crash_reordered`] treats directories the same way but keeps
//! file data out of order, as a drive with a volatile cache may write it
//! back: of the bytes written since a file's last sync, each 4096-byte page
//! (aligned to file offsets that are multiples of 4096) is independently
//! kept, holding the written bytes, or lost, holding what was durable there
//! before (the zeroes of preallocated space, the older bytes of an
//! overwrite, or nothing past the durable length). So a later page of one
//! write can survive while an earlier one is lost. The file is as long as
//! its durable length or as the last byte of its last kept page, whichever
//! is longer; lost bytes in between past the durable length read as
//! zeroes. No junk is added, and, as above, a length cut since the last
//! sync is never kept; a file with nothing unsynced is never changed.
//!
//! # Faults
//!
//! Every operation is counted per [`Op`] ([`SimFs::op_count`]), so a test can
//! run a workload once, read the counts, and then enumerate every step:
//!
//! * [`SimFs::fail_nth`] makes the `n`-th future call of one kind fail once
//!   with a chosen error, without effect; [`SimFs::fail_nth_write_partial`]
//!   lets a prefix of the failing write land first (a short write).
//! * [`SimFs::set_space_budget`] models a full disk: from now, at most that
//!   many bytes of disk blocks may be allocated in total; a write that needs
//!   more lands the prefix that fits and then fails with
//!   [`io::ErrorKind::StorageFull`]. See [the space model](#the-space-model).
//! * [`SimFs::power_cut_after`] lets `n` more mutating operations through
//!   and then fails every operation, as if the machine stopped at that
//!   instant; follow it with [`SimFs::crash`] to see what the disk kept.
//!
//! # The space model
//!
//! Like a real file system, the budget counts allocated blocks, not file
//! lengths. Each file has an allocated prefix (a high-water mark: the log
//! writes sequentially, so holes inside it are not tracked):
//!
//! * [`VfsFile::allocate`] charges what it adds to the allocated prefix, all
//!   or nothing (if it does not fit it fails with `StorageFull` and has no
//!   effect), and zero-extends the file to at least that length. Writes
//!   inside allocated bytes then never fail for lack of space.
//! * A write charges only the bytes it puts past the allocated prefix
//!   (including any gap before it), and the prefix then reaches its end.
//! * [`VfsFile::set_len`] that grows a file is sparse: it charges and
//!   allocates nothing, so a later write into the new bytes can still run
//!   out of space. One that shrinks a file frees the allocated bytes past
//!   the new length.
//! * [`Vfs::remove_file`] (or a rename over a file) frees the file's blocks
//!   once no name in the written namespace links it any more. Handles still
//!   open on it do not keep the blocks (a simplification); a write through
//!   one is charged afresh.
//! * After a crash, the allocation is durable metadata like the length: a
//!   survivor's allocated prefix is simply its durable length.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use wal_core::Vfs;
//! use wal_core::sim::SimFs;
//!
//! let fs = SimFs::new();
//! fs.create_dir_all(Path::new("/db")).unwrap();
//! fs.sync_dir(Path::new("/")).unwrap();
//! let f = fs.create_new(Path::new("/db/a")).unwrap();
//! f.write_all_at(b"hello", 0).unwrap();
//! f.sync_data().unwrap();
//! // The data is durable, but the directory entry is not.
//! let after = fs.crash();
//! assert!(after.read_file(Path::new("/db/a")).is_err());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::vfs::{DirLock, Vfs, VfsFile};

/// A kind of file-system operation, for counting and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Op {
    /// [`Vfs::create_dir_all`].
    CreateDir,
    /// [`Vfs::list_dir`].
    ListDir,
    /// [`Vfs::create_new`].
    Create,
    /// [`Vfs::open_read`] and [`Vfs::open_write`].
    Open,
    /// [`Vfs::remove_file`].
    Remove,
    /// [`Vfs::rename`].
    Rename,
    /// [`Vfs::sync_dir`].
    SyncDir,
    /// [`Vfs::lock_dir`].
    Lock,
    /// [`VfsFile::read_at`].
    Read,
    /// [`VfsFile::write_all_at`].
    Write,
    /// [`VfsFile::sync_data`].
    SyncData,
    /// [`VfsFile::set_len`].
    SetLen,
    /// [`VfsFile::allocate`].
    Allocate,
    /// [`VfsFile::len`].
    Len,
}

impl Op {
    /// Every kind, in declaration order.
    pub const ALL: [Op; 14] = [
        Op::CreateDir,
        Op::ListDir,
        Op::Create,
        Op::Open,
        Op::Remove,
        Op::Rename,
        Op::SyncDir,
        Op::Lock,
        Op::Read,
        Op::Write,
        Op::SyncData,
        Op::SetLen,
        Op::Allocate,
        Op::Len,
    ];

    /// Whether the operation can change the written or the durable image.
    /// Only these count towards [`SimFs::power_cut_after`].
    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            Op::CreateDir
                | Op::Create
                | Op::Remove
                | Op::Rename
                | Op::SyncDir
                | Op::Write
                | Op::SyncData
                | Op::SetLen
                | Op::Allocate
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The message of the error every operation returns once a power cut set by
/// [`SimFs::power_cut_after`] has happened.
pub const POWER_CUT_MESSAGE: &str = "simulated power cut";

/// The message of the error every operation on a crashed file system (or a
/// handle from before the crash) returns.
pub const CRASHED_MESSAGE: &str = "simulated file system was crashed; this handle is dead";

/// Whether `err` (or the error it wraps) is the one a power cut produces.
pub fn is_power_cut(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.to_string() == POWER_CUT_MESSAGE)
}

type Ino = u64;

/// A directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(Ino),
    Dir,
}

/// One atomic change to one directory: names set to an entry or removed.
/// A rename within a directory is one change, so a torn crash never splits it.
type DirChange = Vec<(String, Option<Entry>)>;

#[derive(Debug, Clone, Default)]
struct Dir {
    /// What `list_dir` and lookups see.
    written: BTreeMap<String, Entry>,
    /// What survives a crash.
    durable: BTreeMap<String, Entry>,
    /// Changes since the last `sync_dir`, oldest first. Invariant: applying
    /// them in order to `durable` gives `written`.
    pending: Vec<DirChange>,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    /// The page cache: what reads see.
    data: Vec<u8>,
    /// The platter: what survives a crash.
    disk: Vec<u8>,
    /// Byte ranges of `data` written since the last sync and not yet marked
    /// clean by a failed sync; a successful sync copies them to `disk`.
    dirty: Vec<(u64, u64)>,
    /// The smallest length `data` had since the last successful sync; a sync
    /// cuts `disk` there before extending it, so that bytes cut away and
    /// later re-extended read back as zeroes, not as stale disk content.
    min_len: u64,
    /// How many leading bytes have disk blocks, charged to the space
    /// budget: a high-water mark of a contiguous prefix (the log writes
    /// sequentially, so holes inside it are not tracked). Never more than
    /// `data.len()`.
    allocated: u64,
}

impl Inode {
    /// What `disk` becomes if a sync succeeds now.
    fn synced_image(&self) -> Vec<u8> {
        let mut img = self.disk.clone();
        img.truncate(to_usize(self.min_len));
        img.resize(self.data.len(), 0);
        for &(start, end) in &self.dirty {
            let (s, e) = (to_usize(start), to_usize(end).min(self.data.len()));
            if s < e {
                img[s..e].copy_from_slice(&self.data[s..e]);
            }
        }
        img
    }

    fn sync_ok(&mut self) {
        self.disk = self.synced_image();
        self.dirty.clear();
        self.min_len = len_u64(&self.data);
    }

    /// Linux after a failed fsync: the dirty pages are marked clean, so their
    /// contents never reach the disk; the length change stays pending.
    fn sync_failed(&mut self) {
        self.dirty.clear();
    }

    fn set_len(&mut self, len: u64) {
        let old = len_u64(&self.data);
        self.data.resize(to_usize(len), 0);
        if len < old {
            self.min_len = self.min_len.min(len);
        }
        for r in &mut self.dirty {
            r.1 = r.1.min(len);
        }
        self.dirty.retain(|r| r.0 < r.1);
    }

    fn write(&mut self, buf: &[u8], offset: u64) {
        let end = offset + len_u64(buf);
        if to_usize(end) > self.data.len() {
            self.data.resize(to_usize(end), 0);
        }
        self.data[to_usize(offset)..to_usize(end)].copy_from_slice(buf);
        if !buf.is_empty() {
            self.dirty.push((offset, end));
        }
    }
}

/// A one-shot injected failure.
#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    /// Calls of `op` still to let through before this fault fires.
    skip: u64,
    kind: io::ErrorKind,
    /// For writes: how many leading bytes land before the failure.
    landed: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Set by `crash`: every operation through this state fails.
    dead: bool,
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    locks: BTreeSet<PathBuf>,
    counts: [u64; Op::ALL.len()],
    mutations: u64,
    faults: Vec<Fault>,
    /// Bytes of disk blocks that may still be allocated; `None` is
    /// unlimited.
    space: Option<u64>,
    /// The least `space` was since the budget was set.
    space_low: Option<u64>,
    /// Mutating operations still allowed before the power cut.
    power_cut_in: Option<u64>,
    power_is_cut: bool,
    /// Failures returned because of the fault plan or the space budget.
    injected: u64,
}

/// An in-memory [`Vfs`] with a written and a durable image, crashes and
/// fault injection. See the [module documentation](self) for the model.
///
/// Cloning gives another handle to the same file system.
#[derive(Clone)]
pub struct SimFs {
    shared: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.shared);
        f.debug_struct("SimFs")
            .field("dirs", &st.dirs.len())
            .field("inodes", &st.inodes.len())
            .field("dead", &st.dead)
            .finish()
    }
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs::new()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock (a failing assertion in a test thread)
    // leaves the model consistent: every mutation completes before anything
    // that can panic. So the poison flag carries no information here.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn len_u64(b: &[u8]) -> u64 {
    b.len() as u64
}

fn err(kind: io::ErrorKind, msg: &str) -> io::Error {
    io::Error::new(kind, msg.to_string())
}

/// Normalises `path` to its components (drops `.` and trailing slashes) so
/// that `a/b`, `a/./b` and `a/b/` name the same thing. `..` is kept
/// literally: the log never uses it.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Splits a normalised path into parent directory and final name.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parent, name.to_string()))
}

fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

/// A splitmix64 generator: deterministic, std-only, good enough to choose
/// crash outcomes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            self.next()
        } else {
            self.next() % (max + 1)
        }
    }
}

impl State {
    /// Counts the call, then applies the fault plan: fails if the file
    /// system is dead or the power is cut, or if an injected fault fires.
    /// On `Ok(landed)`, `landed` is `Some(n)` when a write must land only
    /// its first `n` bytes and then fail with the returned kind.
    fn begin(&mut self, op: Op) -> io::Result<Option<(usize, io::ErrorKind)>> {
        if self.dead {
            return Err(err(io::ErrorKind::Other, CRASHED_MESSAGE));
        }
        self.counts[op.index()] += 1;
        if self.power_is_cut {
            return Err(err(io::ErrorKind::Other, POWER_CUT_MESSAGE));
        }
        if op.is_mutation() {
            self.mutations += 1;
            if let Some(left) = self.power_cut_in.as_mut() {
                if *left == 0 {
                    self.power_is_cut = true;
                    return Err(err(io::ErrorKind::Other, POWER_CUT_MESSAGE));
                }
                *left -= 1;
            }
        }
        let mut fired = None;
        for (i, f) in self.faults.iter_mut().enumerate() {
            if f.op != op {
                continue;
            }
            if f.skip == 0 {
                if fired.is_none() {
                    fired = Some(i);
                }
            } else {
                f.skip -= 1;
            }
        }
        if let Some(i) = fired {
            self.injected += 1;
            let f = self.faults.remove(i);
            if op == Op::Write && f.landed > 0 {
                return Ok(Some((f.landed, f.kind)));
            }
            return Err(err(f.kind, &format!("injected {op:?} failure")));
        }
        Ok(None)
    }

    fn dir(&self, path: &Path) -> io::Result<&Dir> {
        if is_root(path) {
            // Roots exist implicitly; an empty one has no entry in `dirs`.
            static EMPTY: std::sync::OnceLock<Dir> = std::sync::OnceLock::new();
            return Ok(self
                .dirs
                .get(path)
                .unwrap_or_else(|| EMPTY.get_or_init(Dir::default)));
        }
        self.dirs
            .get(path)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such directory"))
    }

    fn dir_mut(&mut self, path: &Path) -> io::Result<&mut Dir> {
        if is_root(path) {
            return Ok(self.dirs.entry(path.to_path_buf()).or_default());
        }
        self.dirs
            .get_mut(path)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such directory"))
    }

    fn lookup(&self, path: &Path) -> io::Result<Entry> {
        if is_root(path) {
            return Ok(Entry::Dir);
        }
        let (parent, name) = split(path)?;
        self.dir(&parent)?
            .written
            .get(&name)
            .copied()
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such file or directory"))
    }

    fn lookup_file(&self, path: &Path) -> io::Result<Ino> {
        match self.lookup(path)? {
            Entry::File(ino) => Ok(ino),
            Entry::Dir => Err(err(io::ErrorKind::IsADirectory, "is a directory")),
        }
    }

    /// Records one atomic change in directory `parent`.
    fn change(&mut self, parent: &Path, change: DirChange) -> io::Result<()> {
        let dir = self.dir_mut(parent)?;
        for (name, entry) in &change {
            match entry {
                Some(e) => dir.written.insert(name.clone(), *e),
                None => dir.written.remove(name),
            };
        }
        dir.pending.push(change);
        Ok(())
    }

    /// Takes `extra` bytes of growth from the space budget, or as many as
    /// are left; returns how many were granted. Granting fewer counts as an
    /// injected failure: the caller fails the operation.
    fn take_space(&mut self, extra: u64) -> u64 {
        match self.space.as_mut() {
            None => extra,
            Some(left) => {
                let granted = extra.min(*left);
                *left -= granted;
                let left = *left;
                self.space_low = Some(self.space_low.map_or(left, |low| low.min(left)));
                if granted < extra {
                    self.injected += 1;
                }
                granted
            }
        }
    }

    /// Returns `bytes` to the space budget (if there is one).
    fn give_space(&mut self, bytes: u64) {
        if let Some(left) = self.space.as_mut() {
            *left = left.saturating_add(bytes);
        }
    }

    /// Whether some directory entry of the written namespace names `ino`.
    fn is_linked(&self, ino: Ino) -> bool {
        self.dirs
            .values()
            .any(|d| d.written.values().any(|e| *e == Entry::File(ino)))
    }

    /// After `ino` lost a name: if no name is left, frees its blocks (the
    /// model does not wait for open handles to close).
    fn release_if_unlinked(&mut self, ino: Ino) {
        if self.is_linked(ino) {
            return;
        }
        if let Some(inode) = self.inodes.get_mut(&ino) {
            let freed = std::mem::take(&mut inode.allocated);
            self.give_space(freed);
        }
    }

    /// The durable image as a fresh, live state. With `tear`, a torn or
    /// reordered crash: see the module documentation.
    fn survivor(&self, mut tear: Option<Tear>) -> State {
        let mut out = State {
            next_ino: self.next_ino,
            ..State::default()
        };
        // Walk the durable namespace from the roots; whatever it does not
        // reach (unsynced entries, unlinked inodes) is gone.
        let mut stack: Vec<PathBuf> = self.dirs.keys().filter(|p| is_root(p)).cloned().collect();
        while let Some(path) = stack.pop() {
            let Some(dir) = self.dirs.get(&path) else {
                continue;
            };
            let mut entries = dir.durable.clone();
            if let Some(Tear { rng, .. }) = tear.as_mut() {
                // Each pending change reaches the disk or not, independently
                // of the others; the ones that do apply in the order they
                // were made. One change is atomic (a rename within the
                // directory is never split).
                for change in &dir.pending {
                    if rng.next().is_multiple_of(2) {
                        continue;
                    }
                    for (name, entry) in change {
                        match entry {
                            Some(e) => entries.insert(name.clone(), *e),
                            None => entries.remove(name),
                        };
                    }
                }
            }
            for (name, entry) in &entries {
                match *entry {
                    Entry::Dir => stack.push(path.join(name)),
                    Entry::File(ino) => {
                        if out.inodes.contains_key(&ino) {
                            continue; // hard-linked twice by a torn rename
                        }
                        // Inodes are never dropped from `inodes` (open
                        // handles and unsynced removals keep them), so a kept
                        // entry, however late its change, finds its inode;
                        // should one be missing, the entry still gets one,
                        // empty, rather than dangle.
                        let disk = match (self.inodes.get(&ino), tear.as_mut()) {
                            (None, _) => Vec::new(),
                            (Some(inode), None) => inode.disk.clone(),
                            (Some(inode), Some(Tear { rng, pages: false })) => {
                                torn_content(inode, rng)
                            }
                            (Some(inode), Some(Tear { rng, pages: true })) => {
                                reordered_content(inode, rng)
                            }
                        };
                        out.inodes.insert(
                            ino,
                            Inode {
                                data: disk.clone(),
                                min_len: len_u64(&disk),
                                // Allocation is durable metadata once synced;
                                // simplified to the durable length.
                                allocated: len_u64(&disk),
                                disk,
                                dirty: Vec::new(),
                            },
                        );
                    }
                }
            }
            out.dirs.insert(
                path,
                Dir {
                    written: entries.clone(),
                    durable: entries,
                    pending: Vec::new(),
                },
            );
        }
        out
    }
}

/// How a crash keeps unsynced changes: directory changes as a random subset
/// (both kinds), file data as a random prefix (`pages: false`,
/// [`SimFs::crash_torn`]) or as a random set of pages
/// ([`SimFs::crash_reordered`]).
struct Tear {
    rng: Rng,
    pages: bool,
}

/// The unit [`SimFs::crash_reordered`] keeps or loses file data in.
const PAGE_SIZE: usize = 4096;

/// Which bytes of `img` (the inode's [`Inode::synced_image`]) a sync would
/// write: the file's growth past its durable length and the dirty ranges.
fn written_mask(inode: &Inode, img: &[u8]) -> Vec<bool> {
    let mut written = vec![false; img.len()];
    for flag in written.iter_mut().skip(inode.disk.len()) {
        *flag = true;
    }
    for &(start, end) in &inode.dirty {
        let end = to_usize(end).min(img.len());
        for flag in written.iter_mut().take(end).skip(to_usize(start)) {
            *flag = true;
        }
    }
    written
}

/// The content a torn crash leaves in `inode`: its durable content with a
/// random prefix, in file-offset order, of what was written since the last
/// sync, possibly followed by a run of junk (zeroes or random bytes), never
/// past the written length.
///
/// "In offset order" is the writeback the log's recovery assumes (see
/// `docs/format.md`): Linux writes a file's dirty pages back by ascending
/// index. It covers appends (the kept prefix extends the file) and writes
/// into space the file already had, such as a preallocated segment's zeroes
/// (the kept prefix replaces durable bytes, and the durable bytes after it
/// stay). A length cut since the last sync is never kept.
fn torn_content(inode: &Inode, rng: &mut Rng) -> Vec<u8> {
    let disk = &inode.disk;
    if to_usize(inode.min_len) < disk.len() {
        return disk.clone();
    }
    let img = inode.synced_image();
    let written = written_mask(inode, &img);
    let (Some(first), Some(last)) = (
        written.iter().position(|&w| w),
        written.iter().rposition(|&w| w),
    ) else {
        return disk.clone();
    };
    let cut = first + to_usize(rng.upto(len_u64(&img[first..=last])));
    let mut out = img[..cut].to_vec();
    if let Some(rest) = disk.get(cut..) {
        out.extend_from_slice(rest);
    }
    // Half of the time the kept prefix is all that arrived; otherwise junk
    // follows it, within the bytes being written from the cut on: blocks
    // whose length was recorded but whose data never arrived, or a sector
    // torn mid-write.
    let room = written.iter().skip(cut).take_while(|&&w| w).count();
    if room > 0 && rng.next().is_multiple_of(2) {
        let junk = to_usize(rng.upto(room as u64 - 1) + 1);
        let zeroes = rng.next().is_multiple_of(2);
        if out.len() < cut + junk {
            out.resize(cut + junk, 0);
        }
        for byte in &mut out[cut..cut + junk] {
            *byte = if zeroes { 0 } else { rng.next() as u8 };
        }
    }
    out
}

/// The content a reordered crash leaves in `inode`: of the bytes written
/// since the last sync, each [`PAGE_SIZE`]-byte page (aligned to file
/// offsets) independently holds the written bytes or the durable ones. The
/// file is as long as its durable content or as the last byte of a kept
/// page, whichever is longer; lost bytes past the durable length before a
/// kept page read as zeroes. A length cut since the last sync is never kept.
fn reordered_content(inode: &Inode, rng: &mut Rng) -> Vec<u8> {
    let disk = &inode.disk;
    if to_usize(inode.min_len) < disk.len() {
        return disk.clone();
    }
    let img = inode.synced_image();
    let written = written_mask(inode, &img);
    let mut out = disk.clone();
    for start in (0..img.len()).step_by(PAGE_SIZE) {
        let page = start..(start + PAGE_SIZE).min(img.len());
        let Some(last) = page.clone().rev().find(|&i| written[i]) else {
            continue; // nothing to write back in this page
        };
        if rng.next().is_multiple_of(2) {
            continue; // this page never reached the disk
        }
        if out.len() <= last {
            out.resize(last + 1, 0);
        }
        for i in page.filter(|&i| written[i]) {
            out[i] = img[i];
        }
    }
    out
}

impl SimFs {
    /// An empty file system with no faults planned.
    pub fn new() -> SimFs {
        SimFs {
            shared: Arc::new(Mutex::new(State {
                next_ino: 1,
                ..State::default()
            })),
        }
    }

    /// This file system as the shared handle `Wal::open_with_vfs` takes.
    pub fn shared(&self) -> Arc<dyn Vfs> {
        Arc::new(self.clone())
    }

    /// Loses power: returns a new file system holding only the durable
    /// image. This one, its clones and every handle opened on it are dead
    /// from now on (their operations fail), and its locks are gone. The new
    /// file system has no faults planned and fresh counters.
    pub fn crash(&self) -> SimFs {
        self.crash_with(None)
    }

    /// As [`SimFs::crash`], but some unsynced data and directory changes
    /// reach the disk, chosen deterministically from `seed`; see the
    /// [module documentation](self#torn-crashes).
    pub fn crash_torn(&self, seed: u64) -> SimFs {
        self.crash_with(Some(Tear {
            rng: Rng(seed),
            pages: false,
        }))
    }

    /// As [`SimFs::crash_torn`] for directory changes, but the unsynced
    /// data of each file reaches the disk as a random set of 4096-byte
    /// pages, in no particular order: a later page of a write may survive
    /// while an earlier one is lost. Chosen deterministically from `seed`;
    /// see the [module documentation](self#torn-crashes).
    pub fn crash_reordered(&self, seed: u64) -> SimFs {
        self.crash_with(Some(Tear {
            rng: Rng(seed),
            pages: true,
        }))
    }

    fn crash_with(&self, tear: Option<Tear>) -> SimFs {
        let mut st = lock(&self.shared);
        st.dead = true;
        let next = st.survivor(tear);
        SimFs {
            shared: Arc::new(Mutex::new(next)),
        }
    }

    /// Makes the `n`-th future call of `op` (0 = the next one) fail once with
    /// an error of `kind`, without any effect. Several planned faults are
    /// independent; each counts calls from the moment it was planned.
    pub fn fail_nth(&self, op: Op, n: u64, kind: io::ErrorKind) {
        lock(&self.shared).faults.push(Fault {
            op,
            skip: n,
            kind,
            landed: 0,
        });
    }

    /// Makes the `n`-th future write (0 = the next one) a short write: its
    /// first `landed` bytes reach the page cache, then it fails with `kind`.
    pub fn fail_nth_write_partial(&self, n: u64, landed: usize, kind: io::ErrorKind) {
        lock(&self.shared).faults.push(Fault {
            op: Op::Write,
            skip: n,
            kind,
            landed,
        });
    }

    /// Limits how many bytes of disk blocks may be allocated in total from
    /// now (`None`: unlimited); see [the space model](self#the-space-model).
    /// A write that needs more blocks than are left lands the prefix that
    /// fits and fails with [`io::ErrorKind::StorageFull`]; an
    /// [`VfsFile::allocate`] that does not fit fails without effect; a
    /// growing [`VfsFile::set_len`] is sparse and never fails for space.
    /// Shrinking a file, and removing its last name, give its freed blocks
    /// back.
    pub fn set_space_budget(&self, bytes: Option<u64>) {
        let mut st = lock(&self.shared);
        st.space = bytes;
        st.space_low = bytes;
    }

    /// Lets `n` more mutating operations (see [`Op::is_mutation`]) through;
    /// the one after them and every operation from then on fails with
    /// [`POWER_CUT_MESSAGE`] and no effect. Then call [`SimFs::crash`].
    pub fn power_cut_after(&self, n: u64) {
        let mut st = lock(&self.shared);
        st.power_cut_in = Some(n);
        st.power_is_cut = false;
    }

    /// What is left of the budget set by [`SimFs::set_space_budget`]; run a
    /// workload with a large budget to learn how many bytes of blocks it
    /// holds at the end (bytes freed on the way are given back).
    pub fn space_budget_left(&self) -> Option<u64> {
        lock(&self.shared).space
    }

    /// The least that was left of the budget at any moment since
    /// [`SimFs::set_space_budget`] set it: the budget minus the most blocks
    /// the workload held at once. Run a workload with a large budget to
    /// learn how small a budget makes it run out of space (any smaller than
    /// that peak does, at the point where it is reached).
    pub fn space_budget_low_water(&self) -> Option<u64> {
        lock(&self.shared).space_low
    }

    /// How many operations failed so far because of the fault plan
    /// ([`SimFs::fail_nth`], [`SimFs::fail_nth_write_partial`]) or the space
    /// budget. Power cuts are not counted. A test reads it around a call to
    /// learn whether that call met an injected failure.
    pub fn injected_failures(&self) -> u64 {
        lock(&self.shared).injected
    }

    /// Whether a power cut planned by [`SimFs::power_cut_after`] happened.
    pub fn power_is_cut(&self) -> bool {
        lock(&self.shared).power_is_cut
    }

    /// Drops every planned fault, the space budget and any pending or
    /// happened power cut.
    pub fn clear_faults(&self) {
        let mut st = lock(&self.shared);
        st.faults.clear();
        st.space = None;
        st.space_low = None;
        st.power_cut_in = None;
        st.power_is_cut = false;
    }

    /// How many calls of `op` were made on this file system so far
    /// (including calls that failed).
    pub fn op_count(&self, op: Op) -> u64 {
        lock(&self.shared).counts[op.index()]
    }

    /// How many mutating calls were made so far; the range of useful
    /// arguments to [`SimFs::power_cut_after`] in a rerun of the same
    /// workload is `0..=mutation_count()`.
    pub fn mutation_count(&self) -> u64 {
        lock(&self.shared).mutations
    }

    /// The written (page cache) content of the file at `path`, without
    /// counting an operation or consulting the fault plan.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = lock(&self.shared);
        if st.dead {
            return Err(err(io::ErrorKind::Other, CRASHED_MESSAGE));
        }
        let ino = st.lookup_file(&normalize(path))?;
        Ok(st
            .inodes
            .get(&ino)
            .map(|i| i.data.clone())
            .unwrap_or_default())
    }

    /// The durable content of the file at `path` as a crash now would leave
    /// it, if its directory entry is durable; without counting an operation.
    pub fn durable_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = lock(&self.shared);
        if st.dead {
            return Err(err(io::ErrorKind::Other, CRASHED_MESSAGE));
        }
        let path = normalize(path);
        let (parent, name) = split(&path)?;
        let not_found = || err(io::ErrorKind::NotFound, "not durable");
        // Every ancestor's entry must be durable too.
        let mut dir = parent.clone();
        while let Some(up) = dir.parent() {
            let dname = dir
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(not_found)?;
            match st.dirs.get(up).and_then(|d| d.durable.get(dname)) {
                Some(Entry::Dir) => {}
                _ => return Err(not_found()),
            }
            dir = up.to_path_buf();
        }
        match st.dirs.get(&parent).and_then(|d| d.durable.get(&name)) {
            Some(Entry::File(ino)) => Ok(st
                .inodes
                .get(ino)
                .map(|i| i.disk.clone())
                .unwrap_or_default()),
            _ => Err(not_found()),
        }
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn VfsFile>> {
        let mut st = lock(&self.shared);
        st.begin(Op::Open)?;
        let ino = st.lookup_file(&normalize(path))?;
        Ok(Box::new(SimFile {
            shared: Arc::clone(&self.shared),
            ino,
            writable,
        }))
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.shared);
        st.begin(Op::CreateDir)?;
        let path = normalize(path);
        let mut missing = Vec::new();
        let mut cur = path.as_path();
        loop {
            match st.lookup(cur) {
                Ok(Entry::Dir) => break,
                Ok(Entry::File(_)) => {
                    return Err(err(io::ErrorKind::NotADirectory, "not a directory"));
                }
                Err(_) => {
                    missing.push(cur.to_path_buf());
                    match cur.parent() {
                        Some(p) => cur = p,
                        None => break,
                    }
                }
            }
        }
        for dir in missing.into_iter().rev() {
            let (parent, name) = split(&dir)?;
            st.change(&parent, vec![(name, Some(Entry::Dir))])?;
            st.dirs.insert(dir, Dir::default());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut st = lock(&self.shared);
        st.begin(Op::ListDir)?;
        Ok(st.dir(&normalize(path))?.written.keys().cloned().collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let mut st = lock(&self.shared);
        st.begin(Op::Create)?;
        let path = normalize(path);
        let (parent, name) = split(&path)?;
        if st.dir(&parent)?.written.contains_key(&name) {
            return Err(err(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(ino, Inode::default());
        st.change(&parent, vec![(name, Some(Entry::File(ino)))])?;
        Ok(Box::new(SimFile {
            shared: Arc::clone(&self.shared),
            ino,
            writable: true,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.open(path, false)
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.open(path, true)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.shared);
        st.begin(Op::Remove)?;
        let path = normalize(path);
        let ino = st.lookup_file(&path)?;
        let (parent, name) = split(&path)?;
        // The inode stays in `inodes`: open handles keep using it, and a
        // crash before `sync_dir` brings the entry back.
        st.change(&parent, vec![(name, None)])?;
        st.release_if_unlinked(ino);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = lock(&self.shared);
        st.begin(Op::Rename)?;
        let (from, to) = (normalize(from), normalize(to));
        let ino = st.lookup_file(&from)?;
        let (from_dir, from_name) = split(&from)?;
        let (to_dir, to_name) = split(&to)?;
        if let Ok(Entry::Dir) = st.lookup(&to) {
            return Err(err(io::ErrorKind::IsADirectory, "target is a directory"));
        }
        st.dir(&to_dir)?;
        if from == to {
            return Ok(());
        }
        let replaced = match st.lookup(&to) {
            Ok(Entry::File(old)) => Some(old),
            _ => None,
        };
        if from_dir == to_dir {
            st.change(
                &from_dir,
                vec![(from_name, None), (to_name, Some(Entry::File(ino)))],
            )?;
        } else {
            st.change(&to_dir, vec![(to_name, Some(Entry::File(ino)))])?;
            st.change(&from_dir, vec![(from_name, None)])?;
        }
        // Renaming over a file unlinks it, as `remove_file` does.
        if let Some(old) = replaced.filter(|&old| old != ino) {
            st.release_if_unlinked(old);
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.shared);
        st.begin(Op::SyncDir)?;
        let dir = st.dir_mut(&normalize(path))?;
        dir.durable = dir.written.clone();
        dir.pending.clear();
        Ok(())
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut st = lock(&self.shared);
        st.begin(Op::Lock)?;
        let path = normalize(path);
        st.dir(&path)?;
        if !st.locks.insert(path.clone()) {
            return Err(err(
                io::ErrorKind::WouldBlock,
                "directory is locked by another holder",
            ));
        }
        Ok(Box::new(SimDirLock {
            shared: Arc::clone(&self.shared),
            path,
        }))
    }
}

/// An open file of a [`SimFs`]; holds its inode, not its name.
struct SimFile {
    shared: Arc<Mutex<State>>,
    ino: Ino,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("ino", &self.ino)
            .field("writable", &self.writable)
            .finish()
    }
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(err(
                io::ErrorKind::PermissionDenied,
                "file was opened read-only",
            ))
        }
    }
}

fn inode_mut(st: &mut State, ino: Ino) -> io::Result<&mut Inode> {
    st.inodes
        .get_mut(&ino)
        .ok_or_else(|| err(io::ErrorKind::NotFound, "stale file handle"))
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = lock(&self.shared);
        st.begin(Op::Read)?;
        let data = &inode_mut(&mut st, self.ino)?.data;
        let start = to_usize(offset).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = lock(&self.shared);
        let partial = st.begin(Op::Write)?;
        self.check_writable()?;
        let allocated = inode_mut(&mut st, self.ino)?.allocated;
        let end = offset
            .checked_add(len_u64(buf))
            .ok_or_else(|| err(io::ErrorKind::InvalidInput, "offset overflow"))?;
        // How much of `buf` lands: all of it, or the prefix an injected short
        // write or the space budget lets through.
        let mut land = buf.len();
        let mut failure = None;
        if let Some((n, kind)) = partial {
            land = land.min(n);
            failure = Some(err(kind, "injected short write"));
        }
        // Only bytes past the allocated prefix need new blocks; the prefix
        // grows contiguously, so a gap before `offset` is charged too.
        let want_end = offset + len_u64(&buf[..land]);
        let needed = if land == 0 {
            0
        } else {
            want_end.saturating_sub(allocated)
        };
        let granted = st.take_space(needed);
        if granted < needed {
            // Bytes up to allocated + granted fit.
            let fit_end = allocated + granted;
            land = to_usize(fit_end.saturating_sub(offset)).min(land);
            if land == 0 {
                // Nothing lands, so nothing is allocated.
                st.give_space(granted);
            }
            failure = Some(err(io::ErrorKind::StorageFull, "no space left on device"));
        }
        debug_assert!(offset + len_u64(&buf[..land]) <= end);
        if land > 0 {
            let inode = inode_mut(&mut st, self.ino)?;
            inode.write(&buf[..land], offset);
            inode.allocated = inode.allocated.max(offset + len_u64(&buf[..land]));
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = lock(&self.shared);
        match st.begin(Op::SyncData) {
            Ok(_) => {
                inode_mut(&mut st, self.ino)?.sync_ok();
                Ok(())
            }
            Err(e) => {
                // An injected failure drops the dirty pages (Linux). A dead
                // file system or a power cut changes nothing: the crash that
                // follows decides what survives.
                let injected = !st.dead && !st.power_is_cut;
                if injected {
                    inode_mut(&mut st, self.ino)?.sync_failed();
                }
                Err(e)
            }
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = lock(&self.shared);
        st.begin(Op::SetLen)?;
        self.check_writable()?;
        // Growing is sparse: no blocks, no charge. Shrinking frees the
        // blocks past the new length.
        let inode = inode_mut(&mut st, self.ino)?;
        inode.set_len(len);
        let freed = inode.allocated.saturating_sub(len);
        inode.allocated -= freed;
        st.give_space(freed);
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut st = lock(&self.shared);
        st.begin(Op::Allocate)?;
        self.check_writable()?;
        let allocated = inode_mut(&mut st, self.ino)?.allocated;
        let needed = len.saturating_sub(allocated);
        let granted = st.take_space(needed);
        if granted < needed {
            // All or nothing: give back what was taken.
            st.give_space(granted);
            return Err(err(io::ErrorKind::StorageFull, "no space left on device"));
        }
        let inode = inode_mut(&mut st, self.ino)?;
        if len > len_u64(&inode.data) {
            inode.set_len(len);
        }
        inode.allocated = inode.allocated.max(len);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = lock(&self.shared);
        st.begin(Op::Len)?;
        Ok(len_u64(&inode_mut(&mut st, self.ino)?.data))
    }
}

/// A held [`SimFs`] directory lock.
struct SimDirLock {
    shared: Arc<Mutex<State>>,
    path: PathBuf,
}

impl fmt::Debug for SimDirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDirLock")
            .field("path", &self.path)
            .finish()
    }
}

impl DirLock for SimDirLock {}

impl Drop for SimDirLock {
    fn drop(&mut self) {
        // After a crash this touches only the dead state: the new file
        // system started with no locks.
        lock(&self.shared).locks.remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    /// A file system with a durable, empty `/d`.
    fn fs_with_dir() -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(p("/d")).unwrap();
        fs.sync_dir(p("/")).unwrap();
        fs
    }

    /// Creates `/d/<name>` durably (entry and data) holding `data`.
    fn durable_file(fs: &SimFs, name: &str, data: &[u8]) {
        let path = Path::new("/d").join(name);
        let f = fs.create_new(&path).unwrap();
        f.write_all_at(data, 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(p("/d")).unwrap();
    }

    fn names(fs: &SimFs, dir: &str) -> Vec<String> {
        fs.list_dir(p(dir)).unwrap()
    }

    #[test]
    fn reads_see_written_data_and_positional_writes_extend() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.write_all_at(b"!!", 7).unwrap();
        assert_eq!(f.len().unwrap(), 9);
        let mut buf = [0u8; 16];
        let n = f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"hello\0\0!!");
        assert_eq!(f.read_at(&mut buf, 9).unwrap(), 0);
        assert_eq!(f.read_at(&mut buf, 100).unwrap(), 0);
        let n = f.read_at(&mut buf[..3], 2).unwrap();
        assert_eq!(&buf[..n], b"llo");
    }

    #[test]
    fn create_new_refuses_existing_and_open_requires_existing() {
        let fs = fs_with_dir();
        fs.create_new(p("/d/a")).unwrap();
        assert_eq!(
            fs.create_new(p("/d/a")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            fs.open_read(p("/d/b")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.create_new(p("/nodir/a")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn read_only_handle_refuses_writes() {
        let fs = fs_with_dir();
        durable_file(&fs, "a", b"x");
        let f = fs.open_read(p("/d/a")).unwrap();
        assert!(f.write_all_at(b"y", 0).is_err());
        assert!(f.set_len(0).is_err());
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"x");
    }

    #[test]
    fn unsynced_data_is_lost_and_synced_data_survives() {
        let fs = fs_with_dir();
        durable_file(&fs, "a", b"first");
        let f = fs.open_write(p("/d/a")).unwrap();
        f.write_all_at(b"-second", 5).unwrap();
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"first-second");
        let fs2 = fs.crash();
        assert_eq!(fs2.read_file(p("/d/a")).unwrap(), b"first");

        let f = fs2.open_write(p("/d/a")).unwrap();
        f.write_all_at(b"-third", 5).unwrap();
        f.sync_data().unwrap();
        let fs3 = fs2.crash();
        assert_eq!(fs3.read_file(p("/d/a")).unwrap(), b"first-third");
    }

    #[test]
    fn unsynced_create_is_lost_even_with_synced_data() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.sync_data().unwrap();
        assert_eq!(
            fs.durable_file(p("/d/a")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let after = fs.crash();
        assert!(names(&after, "/d").is_empty());
    }

    #[test]
    fn synced_create_with_unsynced_data_survives_empty() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        fs.sync_dir(p("/d")).unwrap();
        let after = fs.crash();
        assert_eq!(after.read_file(p("/d/a")).unwrap(), b"");
    }

    #[test]
    fn unsynced_directory_creation_is_lost_with_its_files() {
        let fs = SimFs::new();
        fs.create_dir_all(p("/x/y")).unwrap();
        durable_file_at(&fs, "/x/y/f");
        fs.sync_dir(p("/x/y")).unwrap();
        // Neither `/x` in `/` nor `y` in `/x` was synced.
        let after = fs.crash();
        assert!(after.list_dir(p("/x")).is_err());

        let fs = SimFs::new();
        fs.create_dir_all(p("/x/y")).unwrap();
        durable_file_at(&fs, "/x/y/f");
        fs.sync_dir(p("/")).unwrap();
        fs.sync_dir(p("/x")).unwrap();
        let after = fs.crash();
        assert_eq!(after.read_file(p("/x/y/f")).unwrap(), b"z");
    }

    fn durable_file_at(fs: &SimFs, path: &str) {
        let f = fs.create_new(p(path)).unwrap();
        f.write_all_at(b"z", 0).unwrap();
        f.sync_data().unwrap();
        let parent = Path::new(path).parent().unwrap();
        fs.sync_dir(parent).unwrap();
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir_and_replaces_target() {
        let fs = fs_with_dir();
        durable_file(&fs, "tmp", b"new");
        durable_file(&fs, "cur", b"old");
        fs.rename(p("/d/tmp"), p("/d/cur")).unwrap();
        assert_eq!(names(&fs, "/d"), vec!["cur".to_string()]);
        assert_eq!(fs.read_file(p("/d/cur")).unwrap(), b"new");

        let lost = fs.clone().crash();
        assert_eq!(names(&lost, "/d"), vec!["cur", "tmp"]);
        assert_eq!(lost.read_file(p("/d/cur")).unwrap(), b"old");

        // `fs` died with the crash above; redo on the survivor.
        lost.rename(p("/d/tmp"), p("/d/cur")).unwrap();
        lost.sync_dir(p("/d")).unwrap();
        let kept = lost.crash();
        assert_eq!(names(&kept, "/d"), vec!["cur"]);
        assert_eq!(kept.read_file(p("/d/cur")).unwrap(), b"new");
    }

    #[test]
    fn removal_is_durable_only_after_sync_dir() {
        let fs = fs_with_dir();
        durable_file(&fs, "a", b"1");
        fs.remove_file(p("/d/a")).unwrap();
        assert!(names(&fs, "/d").is_empty());
        let back = fs.crash();
        assert_eq!(back.read_file(p("/d/a")).unwrap(), b"1");
        back.remove_file(p("/d/a")).unwrap();
        back.sync_dir(p("/d")).unwrap();
        assert!(names(&back.crash(), "/d").is_empty());
    }

    #[test]
    fn open_handle_survives_removal_and_rename_over_it() {
        let fs = fs_with_dir();
        durable_file(&fs, "a", b"inode-a");
        durable_file(&fs, "b", b"inode-b");
        let h = fs.open_write(p("/d/a")).unwrap();
        fs.rename(p("/d/b"), p("/d/a")).unwrap();
        h.write_all_at(b"!", 7).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(h.read_at(&mut buf, 0).unwrap(), 8);
        assert_eq!(&buf, b"inode-a!");
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"inode-b");
        fs.remove_file(p("/d/a")).unwrap();
        h.sync_data().unwrap();
        assert_eq!(h.len().unwrap(), 8);
    }

    #[test]
    fn crash_kills_old_handles_and_releases_locks() {
        let fs = fs_with_dir();
        durable_file(&fs, "a", b"x");
        let h = fs.open_write(p("/d/a")).unwrap();
        let guard = fs.lock_dir(p("/d")).unwrap();
        assert_eq!(
            fs.lock_dir(p("/d")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let after = fs.crash();
        assert!(h.write_all_at(b"y", 0).is_err());
        assert!(h.sync_data().is_err());
        assert!(fs.list_dir(p("/d")).is_err());
        let guard2 = after.lock_dir(p("/d")).unwrap();
        // Dropping the old guard must not release the new holder's lock.
        drop(guard);
        assert_eq!(
            after.lock_dir(p("/d")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(guard2);
        after.lock_dir(p("/d")).unwrap();
    }

    #[test]
    fn lock_is_released_on_drop() {
        let fs = fs_with_dir();
        let g = fs.lock_dir(p("/d")).unwrap();
        assert!(fs.lock_dir(p("/d")).is_err());
        drop(g);
        fs.lock_dir(p("/d")).unwrap();
        assert_eq!(
            fs.lock_dir(p("/missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn truncation_needs_sync_and_re_extension_reads_zeroes() {
        let fs = fs_with_dir();
        durable_file(&fs, "a", b"0123456789");
        let f = fs.open_write(p("/d/a")).unwrap();
        f.set_len(4).unwrap();
        assert_eq!(
            fs.clone().crash().read_file(p("/d/a")).unwrap(),
            b"0123456789"
        );

        let fs = fs_with_dir();
        durable_file(&fs, "a", b"0123456789");
        let f = fs.open_write(p("/d/a")).unwrap();
        f.set_len(4).unwrap();
        f.set_len(6).unwrap();
        f.write_all_at(b"Z", 8).unwrap();
        f.sync_data().unwrap();
        assert_eq!(fs.crash().read_file(p("/d/a")).unwrap(), b"0123\0\0\0\0Z");
    }

    #[test]
    fn failed_sync_loses_data_for_good() {
        let fs = fs_with_dir();
        durable_file(&fs, "a", b"base|");
        let f = fs.open_write(p("/d/a")).unwrap();
        f.write_all_at(b"lost|", 5).unwrap();
        fs.fail_nth(Op::SyncData, 0, io::ErrorKind::Other);
        assert!(f.sync_data().is_err());
        // The page cache still holds it...
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"base|lost|");
        f.write_all_at(b"later", 10).unwrap();
        // ...and a later good sync persists the length and the new write,
        // but not the pages the failed sync marked clean.
        f.sync_data().unwrap();
        assert_eq!(
            fs.crash().read_file(p("/d/a")).unwrap(),
            b"base|\0\0\0\0\0later"
        );
    }

    #[test]
    fn fail_nth_fires_once_on_the_nth_call_without_effect() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        fs.fail_nth(Op::Write, 2, io::ErrorKind::PermissionDenied);
        f.write_all_at(b"a", 0).unwrap();
        f.write_all_at(b"b", 1).unwrap();
        let e = f.write_all_at(b"c", 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        f.write_all_at(b"d", 2).unwrap();
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"abd");
        assert_eq!(fs.op_count(Op::Write), 4);
        assert_eq!(fs.injected_failures(), 1);

        for op in [Op::Create, Op::Rename, Op::Remove, Op::SyncDir, Op::SetLen] {
            fs.fail_nth(op, 0, io::ErrorKind::Other);
        }
        assert!(fs.create_new(p("/d/b")).is_err());
        assert!(names(&fs, "/d") == vec!["a"]);
        assert!(fs.rename(p("/d/a"), p("/d/c")).is_err());
        assert!(fs.remove_file(p("/d/a")).is_err());
        assert!(names(&fs, "/d") == vec!["a"]);
        assert!(f.set_len(0).is_err());
        assert_eq!(f.len().unwrap(), 3);
        assert!(fs.sync_dir(p("/d")).is_err());
        // The failed sync_dir made nothing durable; a later one does.
        assert!(fs.durable_file(p("/d/a")).is_err());
        fs.sync_dir(p("/d")).unwrap();
        assert!(fs.durable_file(p("/d/a")).is_ok());
    }

    #[test]
    fn partial_write_lands_a_prefix() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        fs.fail_nth_write_partial(0, 3, io::ErrorKind::Interrupted);
        assert!(f.write_all_at(b"abcdef", 0).is_err());
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"abc");
    }

    #[test]
    fn space_budget_gives_short_write_then_storage_full() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        f.write_all_at(b"0123", 0).unwrap();
        fs.set_space_budget(Some(5));
        // Overwrites cost nothing.
        f.write_all_at(b"ab", 0).unwrap();
        f.write_all_at(b"xyz", 4).unwrap();
        let e = f.write_all_at(b"PQRST", 7).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"ab23xyzPQ");
        assert_eq!(fs.space_budget_left(), Some(0));
        assert_eq!(fs.injected_failures(), 1);
        // A write that lands nothing allocates nothing.
        fs.set_space_budget(Some(3));
        let e = f.write_all_at(b"far", 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs.space_budget_left(), Some(3));
        assert_eq!(f.len().unwrap(), 9);
        assert_eq!(fs.injected_failures(), 2);
    }

    #[test]
    fn a_write_into_allocated_space_needs_no_budget() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        fs.set_space_budget(Some(100));
        f.allocate(100).unwrap();
        assert_eq!(fs.space_budget_left(), Some(0));
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), vec![0; 100]);
        f.write_all_at(&[7; 60], 0).unwrap();
        f.write_all_at(&[8; 40], 60).unwrap();
        // Allocating what is allocated already costs nothing either.
        f.allocate(100).unwrap();
        f.allocate(10).unwrap();
        assert_eq!(f.len().unwrap(), 100);
        let e = f.write_all_at(b"x", 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs.injected_failures(), 1);
        assert_eq!(f.len().unwrap(), 100);
    }

    #[test]
    fn a_write_into_a_sparse_extension_can_run_out_of_space() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        fs.set_space_budget(Some(0));
        // Growing by set_len reserves nothing, and so never fails for space.
        f.set_len(100).unwrap();
        assert_eq!(fs.space_budget_left(), Some(0));
        let e = f.write_all_at(b"record", 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let mut want = b"abc".to_vec();
        want.resize(100, 0);
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), want);
        // The bytes written before are allocated: overwriting them works.
        f.write_all_at(b"ABC", 0).unwrap();
    }

    #[test]
    fn shrinking_and_removing_give_blocks_back() {
        let fs = fs_with_dir();
        fs.set_space_budget(Some(1000));
        let a = fs.create_new(p("/d/a")).unwrap();
        a.write_all_at(&[1; 300], 0).unwrap();
        assert_eq!(fs.space_budget_left(), Some(700));
        a.set_len(100).unwrap();
        assert_eq!(fs.space_budget_left(), Some(900));
        assert_eq!(fs.space_budget_low_water(), Some(700));
        // Regrowing is sparse; shrinking within the hole frees nothing.
        a.set_len(500).unwrap();
        a.set_len(200).unwrap();
        assert_eq!(fs.space_budget_left(), Some(900));
        fs.remove_file(p("/d/a")).unwrap();
        assert_eq!(fs.space_budget_left(), Some(1000));

        // Renaming over a file unlinks it too; the renamed one keeps its
        // blocks.
        let b = fs.create_new(p("/d/b")).unwrap();
        b.allocate(400).unwrap();
        let c = fs.create_new(p("/d/c")).unwrap();
        c.write_all_at(&[2; 50], 0).unwrap();
        assert_eq!(fs.space_budget_left(), Some(550));
        fs.rename(p("/d/c"), p("/d/b")).unwrap();
        assert_eq!(fs.space_budget_left(), Some(950));
        fs.remove_file(p("/d/b")).unwrap();
        assert_eq!(fs.space_budget_left(), Some(1000));
        assert_eq!(fs.space_budget_low_water(), Some(550));
        fs.set_space_budget(Some(10));
        assert_eq!(fs.space_budget_low_water(), Some(10));
    }

    #[test]
    fn a_failed_allocate_has_no_effect() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        fs.set_space_budget(Some(50));
        let e = f.allocate(100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs.injected_failures(), 1);
        assert_eq!(fs.space_budget_left(), Some(50));
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"data");

        fs.fail_nth(Op::Allocate, 0, io::ErrorKind::Other);
        assert_eq!(f.allocate(10).unwrap_err().kind(), io::ErrorKind::Other);
        assert_eq!(f.len().unwrap(), 4);
        assert_eq!(fs.space_budget_left(), Some(50));
        assert_eq!(fs.op_count(Op::Allocate), 2);

        // What fits exactly does: 4 bytes were allocated by the write.
        f.allocate(54).unwrap();
        assert_eq!(fs.space_budget_left(), Some(0));
        assert_eq!(f.len().unwrap(), 54);
        let r = fs.open_read(p("/d/a")).unwrap();
        assert!(r.allocate(60).is_err());
        assert_eq!(f.len().unwrap(), 54);
    }

    #[test]
    fn allocated_length_is_durable_after_sync_and_counts_as_a_mutation() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        fs.sync_dir(p("/d")).unwrap();
        f.write_all_at(b"hd", 0).unwrap();
        f.allocate(64).unwrap();
        assert_eq!(fs.clone().crash().read_file(p("/d/a")).unwrap(), b"");

        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        fs.sync_dir(p("/d")).unwrap();
        f.write_all_at(b"hd", 0).unwrap();
        let before = fs.mutation_count();
        f.allocate(64).unwrap();
        assert_eq!(fs.mutation_count(), before + 1);
        f.sync_data().unwrap();
        let after = fs.crash();
        let mut want = b"hd".to_vec();
        want.resize(64, 0);
        assert_eq!(after.read_file(p("/d/a")).unwrap(), want);
        // The survivor's blocks are its durable length: writes inside need
        // no budget.
        after.set_space_budget(Some(0));
        let f = after.open_write(p("/d/a")).unwrap();
        f.write_all_at(&[9; 64], 0).unwrap();
        assert!(f.write_all_at(b"!", 64).is_err());

        // A power cut stops an allocate like any mutation.
        after.power_cut_after(0);
        assert!(is_power_cut(&f.allocate(128).unwrap_err()));
    }

    #[test]
    fn power_cut_stops_everything_after_n_mutations() {
        let fs = fs_with_dir();
        let f = fs.create_new(p("/d/a")).unwrap();
        fs.power_cut_after(2);
        f.write_all_at(b"a", 0).unwrap();
        f.sync_data().unwrap();
        let e = fs.sync_dir(p("/d")).unwrap_err();
        assert!(is_power_cut(&e));
        assert!(fs.power_is_cut());
        assert!(is_power_cut(&f.len().unwrap_err()));
        assert!(is_power_cut(&fs.list_dir(p("/d")).unwrap_err()));
        // The cut sync_dir did nothing: the file is not durable.
        assert!(names(&fs.crash(), "/d").is_empty());
    }

    #[test]
    fn counters_count_every_call() {
        let fs = SimFs::new();
        fs.create_dir_all(p("/d")).unwrap();
        let f = fs.create_new(p("/d/a")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.write_all_at(b"x", 1).unwrap();
        f.sync_data().unwrap();
        let mut buf = [0u8; 1];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(fs.op_count(Op::Write), 2);
        assert_eq!(fs.op_count(Op::Read), 1);
        assert_eq!(fs.op_count(Op::Create), 1);
        assert_eq!(fs.mutation_count(), 5);
        // A crashed file system starts counting afresh.
        assert_eq!(fs.crash().mutation_count(), 0);
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_appended_data_and_never_more() {
        let mut saw_partial = false;
        let mut saw_junk = false;
        let mut saw_kept_create = false;
        for seed in 0..200 {
            let fs = fs_with_dir();
            durable_file(&fs, "a", b"synced|");
            let f = fs.open_write(p("/d/a")).unwrap();
            f.write_all_at(b"unsynced-tail", 7).unwrap();
            fs.create_new(p("/d/b")).unwrap();
            let after = fs.crash_torn(seed);
            let got = after.read_file(p("/d/a")).unwrap();
            let written = b"synced|unsynced-tail";
            assert!(got.len() <= written.len());
            assert_eq!(&got[..7], b"synced|", "seed {seed}: durable part kept");
            let kept = got[7..]
                .iter()
                .zip(&written[7..])
                .take_while(|(a, b)| a == b)
                .count();
            if kept > 0 && got.len() < written.len() {
                saw_partial = true;
            }
            if kept + 7 < got.len() {
                saw_junk = true;
            }
            if after.read_file(p("/d/b")).is_ok() {
                saw_kept_create = true;
            }
            // Deterministic.
            let again = {
                let fs = fs_with_dir();
                durable_file(&fs, "a", b"synced|");
                let f = fs.open_write(p("/d/a")).unwrap();
                f.write_all_at(b"unsynced-tail", 7).unwrap();
                fs.create_new(p("/d/b")).unwrap();
                fs.crash_torn(seed).read_file(p("/d/a")).unwrap()
            };
            assert_eq!(got, again);
        }
        assert!(saw_partial && saw_junk && saw_kept_create);
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_overwrites_in_offset_order_and_never_splits_a_rename() {
        let (mut saw_none, mut saw_partial, mut saw_all, mut saw_junk) =
            (false, false, false, false);
        for seed in 0..200 {
            let fs = fs_with_dir();
            // A preallocated file: durable zeroes, then a record written into
            // them and not synced.
            durable_file(&fs, "a", &[0; 16]);
            durable_file(&fs, "b", b"b");
            let f = fs.open_write(p("/d/a")).unwrap();
            f.write_all_at(b"record", 3).unwrap();
            fs.rename(p("/d/b"), p("/d/c")).unwrap();
            let after = fs.crash_torn(seed);
            let got = after.read_file(p("/d/a")).unwrap();
            assert_eq!(got.len(), 16, "seed {seed}: the length is durable");
            assert_eq!(&got[..3], &[0; 3], "seed {seed}: bytes before stay");
            assert_eq!(&got[9..], &[0; 7], "seed {seed}: bytes never written stay");
            let kept = got[3..9]
                .iter()
                .zip(b"record")
                .take_while(|(a, b)| a == b)
                .count();
            match kept {
                0 => saw_none = true,
                6 => saw_all = true,
                _ => saw_partial = true,
            }
            if got[3 + kept..9].iter().any(|&b| b != 0) {
                saw_junk = true;
            }
            let n = names(&after, "/d");
            assert!(
                n == vec!["a", "b"] || n == vec!["a", "c"],
                "seed {seed}: {n:?}"
            );
        }
        assert!(saw_none && saw_partial && saw_all && saw_junk);
    }

    #[test]
    fn torn_crash_keeps_any_subset_of_directory_changes_in_order() {
        // Two removals with no sync_dir between them: the second may reach
        // the disk while the first does not.
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let run = || {
                let fs = fs_with_dir();
                durable_file(&fs, "a", b"1");
                durable_file(&fs, "b", b"2");
                fs.remove_file(p("/d/a")).unwrap();
                fs.remove_file(p("/d/b")).unwrap();
                names(&fs.crash_torn(seed), "/d")
            };
            let n = run();
            assert_eq!(n, run(), "seed {seed}: deterministic");
            seen.insert(n);
        }
        let all: BTreeSet<Vec<String>> = [vec![], vec!["a"], vec!["b"], vec!["a", "b"]]
            .into_iter()
            .map(|v| v.into_iter().map(String::from).collect())
            .collect();
        // Every subset occurs, and nothing else: in particular `a` still
        // there with `b` gone (the later removal kept, the earlier lost).
        assert_eq!(seen, all);
    }

    #[test]
    fn torn_crash_never_splits_a_rename_among_other_changes() {
        let (mut saw_old, mut saw_new) = (false, false);
        for seed in 0..64 {
            let fs = fs_with_dir();
            durable_file(&fs, "old", b"payload");
            durable_file(&fs, "gone", b"g");
            // Pending changes before and after the rename, so that it sits
            // among kept and lost ones.
            fs.create_new(p("/d/before")).unwrap();
            fs.rename(p("/d/old"), p("/d/new")).unwrap();
            fs.remove_file(p("/d/gone")).unwrap();
            let after = fs.crash_torn(seed);
            let n = names(&after, "/d");
            let (has_old, has_new) = (n.contains(&"old".into()), n.contains(&"new".into()));
            assert!(has_old != has_new, "seed {seed}: rename split: {n:?}");
            let name = if has_old { "/d/old" } else { "/d/new" };
            assert_eq!(after.read_file(p(name)).unwrap(), b"payload");
            saw_old |= has_old;
            saw_new |= has_new;
        }
        assert!(saw_old && saw_new);
    }

    #[test]
    fn torn_crash_never_keeps_an_unsynced_length_cut() {
        for seed in 0..50 {
            let fs = fs_with_dir();
            durable_file(&fs, "a", b"old-bytes");
            let f = fs.open_write(p("/d/a")).unwrap();
            f.set_len(3).unwrap();
            f.write_all_at(b"NEW", 0).unwrap();
            let after = fs.crash_torn(seed);
            assert_eq!(
                after.read_file(p("/d/a")).unwrap(),
                b"old-bytes",
                "seed {seed}"
            );
        }
    }

    /// Non-zero bytes, different from page to page, so that a kept page
    /// tells from a lost one (zeroes) and from a neighbour.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 + 1).collect()
    }

    /// For each page of `got` holding bytes of the write of `data` at
    /// `offset`: whether it holds them all (`true`) or zeroes only
    /// (`false`); panics on a page that holds anything else.
    fn pages_kept(got: &[u8], data: &[u8], offset: usize, what: &str) -> Vec<bool> {
        let end = offset + data.len();
        let mut kept = Vec::new();
        for start in (offset / PAGE_SIZE * PAGE_SIZE..end).step_by(PAGE_SIZE) {
            let range = start.max(offset)..(start + PAGE_SIZE).min(end);
            let want = &data[range.start - offset..range.end - offset];
            let have = got.get(range.clone()).unwrap_or(&[]);
            if have == want {
                kept.push(true);
            } else {
                assert!(
                    have.iter().all(|&b| b == 0),
                    "{what}: page at {start} is neither kept nor lost"
                );
                kept.push(false);
            }
        }
        kept
    }

    #[test]
    fn reordered_crash_keeps_any_set_of_pages_of_an_overwrite() {
        // A preallocated file of four durable pages of zeroes; one write
        // into it, not synced, touching all four (partly the first and the
        // last). Beside it, files that are fully synced.
        let data = pattern(3 * PAGE_SIZE);
        let offset = PAGE_SIZE / 2;
        let (mut saw_later_only, mut saw_none, mut saw_all) = (false, false, false);
        let (mut saw_create, mut saw_no_create) = (false, false);
        for seed in 0..64 {
            let run = || {
                let fs = fs_with_dir();
                durable_file(&fs, "a", &[0; 4 * PAGE_SIZE]);
                durable_file(&fs, "s", b"synced");
                let t = fs.create_new(p("/d/t")).unwrap();
                t.write_all_at(&data, 0).unwrap();
                t.sync_data().unwrap();
                fs.sync_dir(p("/d")).unwrap();
                let f = fs.open_write(p("/d/a")).unwrap();
                f.write_all_at(&data, offset as u64).unwrap();
                fs.create_new(p("/d/new")).unwrap();
                fs.crash_reordered(seed)
            };
            let after = run();
            let what = format!("seed {seed}");
            let got = after.read_file(p("/d/a")).unwrap();
            assert_eq!(got, run().read_file(p("/d/a")).unwrap(), "{what}");
            assert_eq!(got.len(), 4 * PAGE_SIZE, "{what}: the length is durable");
            assert!(got[..offset].iter().all(|&b| b == 0), "{what}");
            assert!(got[offset + data.len()..].iter().all(|&b| b == 0), "{what}");
            let kept = pages_kept(&got, &data, offset, &what);
            assert_eq!(kept.len(), 4);
            if let Some(first_kept) = kept.iter().position(|&k| k) {
                saw_later_only |= first_kept > 0;
            }
            saw_none |= kept.iter().all(|&k| !k);
            saw_all |= kept.iter().all(|&k| k);
            // Synced files are never changed.
            assert_eq!(after.read_file(p("/d/s")).unwrap(), b"synced", "{what}");
            assert_eq!(after.read_file(p("/d/t")).unwrap(), data, "{what}");
            // Directory changes as in a torn crash.
            match after.read_file(p("/d/new")) {
                Ok(_) => saw_create = true,
                Err(_) => saw_no_create = true,
            }
        }
        assert!(
            saw_later_only,
            "a later page never survived without an earlier one"
        );
        assert!(saw_none && saw_all && saw_create && saw_no_create);
    }

    #[test]
    fn reordered_crash_of_an_append_covers_the_last_kept_page_with_zeroes_between() {
        let data = pattern(3 * PAGE_SIZE);
        let mut saw_gap = false;
        for seed in 0..64 {
            let fs = fs_with_dir();
            durable_file(&fs, "a", b"head");
            let f = fs.open_write(p("/d/a")).unwrap();
            f.write_all_at(&data, 4).unwrap();
            let got = fs.crash_reordered(seed).read_file(p("/d/a")).unwrap();
            let what = format!("seed {seed}");
            assert_eq!(&got[..4], b"head", "{what}");
            let kept = pages_kept(&got, &data, 4, &what);
            // The file ends with the last kept page (or where the write
            // ends inside it), or at its durable length.
            let want_len = match kept.iter().rposition(|&k| k) {
                Some(last) => ((last + 1) * PAGE_SIZE).min(4 + data.len()),
                None => 4,
            };
            assert_eq!(got.len(), want_len, "{what}: {kept:?}");
            saw_gap |= kept.first() == Some(&false) && kept.iter().any(|&k| k);
        }
        assert!(saw_gap, "a later page never survived past a lost first one");
    }

    #[test]
    fn reordered_crash_never_keeps_an_unsynced_length_cut() {
        for seed in 0..32 {
            let fs = fs_with_dir();
            let old = pattern(2 * PAGE_SIZE);
            durable_file(&fs, "a", &old);
            let f = fs.open_write(p("/d/a")).unwrap();
            f.set_len(10).unwrap();
            f.write_all_at(&[0xEE; PAGE_SIZE], 2 * PAGE_SIZE as u64)
                .unwrap();
            let got = fs.crash_reordered(seed).read_file(p("/d/a")).unwrap();
            assert_eq!(got, old, "seed {seed}");
        }
    }

    #[test]
    fn relative_paths_work() {
        let fs = SimFs::new();
        fs.create_dir_all(p("rel/dir")).unwrap();
        fs.sync_dir(p("")).unwrap();
        fs.sync_dir(p("rel")).unwrap();
        durable_file_at(&fs, "rel/dir/f");
        assert_eq!(fs.crash().read_file(p("./rel/dir/f")).unwrap(), b"z");
    }
}
