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
    /// Sets the file's length, truncating or zero-extending it.
    fn set_len(&self, len: u64) -> io::Result<()>;
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

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// The lock of [`StdFs::lock_dir`]: closing the file releases the flock.
#[derive(Debug)]
struct StdDirLock {
    _file: File,
}

impl DirLock for StdDirLock {}
