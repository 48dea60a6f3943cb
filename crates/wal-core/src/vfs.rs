//! The file layer under the log.
//!
//! Every file-system operation wal-core performs goes through [`Vfs`] and
//! [`VfsFile`], so that tests can substitute a simulated file system that
//! models crashes and injects errors (see `sim`, behind the `test-util`
//! feature). [`StdFs`] is the real one.
//!
//! Writes are positional (`pwrite`-style) so the log never depends on a
//! shared file cursor.

use std::fmt;
use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A file system as the log sees it. Implementations must be usable from many
/// threads at once.
pub trait Vfs: Send + Sync + fmt::Debug + 'static {
    /// Creates `path` and all missing parents; succeeds if it exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names (not full paths) of the entries in directory `path`, in no
    /// particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Creates a new file for reading and writing; fails with
    /// `AlreadyExists` if it exists. The new directory entry is durable only
    /// after [`Vfs::sync_dir`] on the parent.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Opens an existing file for reading only.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Opens an existing file for reading and writing.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Removes a file. Durable only after [`Vfs::sync_dir`] on the parent.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    /// Durable only after [`Vfs::sync_dir`] on the parent.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on directory `path`, held until the returned
    /// guard is dropped. Fails with `WouldBlock` if another holder (in this
    /// process or another) has it.
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// An open file. Positional reads and writes; no shared cursor.
#[expect(
    clippy::len_without_is_empty,
    reason = "`len` is a file length read through I/O, not a collection size, \
              and nothing asks whether a file is empty"
)]
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it back, such
    /// as its length) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Sets the file's length, truncating or zero-extending it. Extending
    /// reserves no disk space (the new bytes are a hole): a later write into
    /// them can still fail for lack of space. See [`VfsFile::allocate`].
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk space for the file's first `len` bytes and extends it
    /// to at least `len` bytes (zeroes), like `fallocate(fd, 0, 0, len)`:
    /// afterwards, writes inside those bytes never fail for lack of space.
    /// The new length is durable after [`VfsFile::sync_data`], like
    /// [`VfsFile::set_len`]. It never shrinks the file.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
}

/// A held directory lock; dropping it releases the lock.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// The real file system, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl StdFs {
    /// A shareable handle to the real file system.
    pub fn shared() -> Arc<dyn Vfs> {
        Arc::new(StdFs)
    }
}

/// Name of the lock file [`StdFs::lock_dir`] creates in the log directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

impl Vfs for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            // Names that are not UTF-8 cannot be segment names: skip them.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(StdFile {
            file: File::open(path)?,
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = File::options().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced; that makes
        // its entries (created, renamed, removed files) durable.
        File::open(path)?.sync_all()
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE_NAME))?;
        // `try_lock` is flock(2) on Unix: it belongs to this open file
        // description, so a second open in the same process conflicts too.
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdDirLock { _file: file })),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the directory lock is held",
            )),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A file of [`StdFs`].
#[derive(Debug)]
struct StdFile {
    file: File,
}

impl VfsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// `fallocate(fd, 0, 0, len)` on Linux (retried on `EINTR`). Where that
    /// is not available (other Unixes, or a Linux file system that answers
    /// `EOPNOTSUPP`), zero blocks are written from the current length up to
    /// `len` instead: that reserves the space too, as real blocks, but
    /// leaves any hole before the current length unreserved.
    fn allocate(&self, len: u64) -> io::Result<()> {
        if len == 0 {
            // Nothing to reserve (and fallocate refuses a zero length).
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        if fallocate(&self.file, len)? == Fallocate::Done {
            return Ok(());
        }
        write_zeroes_up_to(&self.file, len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// What [`fallocate`] achieved.
#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq, Eq)]
enum Fallocate {
    /// The space is reserved.
    Done,
    /// The file system does not support it; nothing changed.
    Unsupported,
}

/// `fallocate(fd, 0, 0, len)`, retried when interrupted by a signal.
#[cfg(target_os = "linux")]
fn fallocate(file: &File, len: u64) -> io::Result<Fallocate> {
    use std::os::fd::AsRawFd;

    let len = libc::off_t::try_from(len).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "allocation length exceeds off_t",
        )
    })?;
    loop {
        // SAFETY: fallocate takes a file descriptor and two integers and
        // touches no memory of ours; the descriptor is open for as long as
        // `file` is borrowed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(Fallocate::Done);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return Ok(Fallocate::Unsupported),
            _ => return Err(e),
        }
    }
}

/// How many zeroes [`write_zeroes_up_to`] writes at a time.
const ZERO_CHUNK: usize = 1 << 20;

/// Extends `file` to `len` bytes by writing zero blocks from its current
/// length, [`ZERO_CHUNK`] bytes at a time; a file already that long is left
/// alone. The portable way to reserve space: written blocks are allocated.
fn write_zeroes_up_to(file: &File, len: u64) -> io::Result<()> {
    let mut at = file.metadata()?.len();
    if at >= len {
        return Ok(());
    }
    let chunk = (len - at).min(ZERO_CHUNK as u64);
    let zeroes = vec![0u8; chunk as usize];
    while at < len {
        let n = (len - at).min(chunk);
        FileExt::write_all_at(file, &zeroes[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// The lock of [`StdFs::lock_dir`]: closing the file releases the flock.
#[derive(Debug)]
struct StdDirLock {
    _file: File,
}

impl DirLock for StdDirLock {}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn read_all(file: &dyn VfsFile) -> Vec<u8> {
        let mut buf = vec![0; usize::try_from(file.len().unwrap()).unwrap()];
        let n = file.read_at(&mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn allocate_zero_extends_keeps_data_and_never_shrinks() {
        let tmp = tempfile::tempdir().unwrap();
        let f = StdFs.create_new(&tmp.path().join("f")).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.allocate(10_000).unwrap();
        assert_eq!(f.len().unwrap(), 10_000);
        let got = read_all(&*f);
        assert_eq!(&got[..4], b"data");
        assert!(got[4..].iter().all(|&b| b == 0));
        f.allocate(100).unwrap();
        f.allocate(0).unwrap();
        assert_eq!(f.len().unwrap(), 10_000);
        assert_eq!(&read_all(&*f)[..4], b"data");
    }

    #[test]
    fn allocate_reserves_blocks_where_set_len_leaves_a_hole() {
        // Assumes a file system with sparse files and real allocation
        // (ext4, xfs, btrfs, tmpfs), as the log's users run on.
        let tmp = tempfile::tempdir().unwrap();
        let len = 1 << 20;
        let sparse = StdFs.create_new(&tmp.path().join("sparse")).unwrap();
        sparse.set_len(len).unwrap();
        let reserved = StdFs.create_new(&tmp.path().join("reserved")).unwrap();
        reserved.allocate(len).unwrap();
        let blocks = |name: &str| std::fs::metadata(tmp.path().join(name)).unwrap().blocks() * 512;
        assert!(
            blocks("sparse") < len,
            "set_len reserved {}",
            blocks("sparse")
        );
        assert!(
            blocks("reserved") >= len,
            "allocate reserved {}",
            blocks("reserved")
        );
    }

    #[test]
    fn allocate_on_a_read_only_handle_fails_without_effect() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        StdFs
            .create_new(&path)
            .unwrap()
            .write_all_at(b"x", 0)
            .unwrap();
        let f = StdFs.open_read(&path).unwrap();
        assert!(f.allocate(4096).is_err());
        assert_eq!(f.len().unwrap(), 1);
    }

    #[test]
    fn the_zero_writing_fallback_extends_from_the_current_length() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        FileExt::write_all_at(&file, b"abc", 0).unwrap();
        // More than two chunks, not a multiple of one.
        let len = 2 * ZERO_CHUNK as u64 + 5;
        write_zeroes_up_to(&file, len).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len() as u64, len);
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..].iter().all(|&b| b == 0));
        assert!(file.metadata().unwrap().blocks() * 512 >= len);
        // A file already that long is left alone.
        FileExt::write_all_at(&file, b"end", len - 3).unwrap();
        write_zeroes_up_to(&file, 10).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len() as u64, len);
        assert_eq!(&got[got.len() - 3..], b"end");
    }
}
