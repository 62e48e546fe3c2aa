//! An append-only file (or memory, for a temporary store): open with a torn tail cut, append, read, replace whole.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::StoreError;

fn fail<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::File {
        op,
        path: path.to_path_buf(),
        source: e,
    }
}

/// Store files are the bot's alone: read and written by its user only.
pub(super) const FILE_MODE: u32 = 0o600;
/// And so are the store's folders.
pub(super) const DIR_MODE: u32 = 0o700;

/// `opts` creating files with [`FILE_MODE`].
fn private(opts: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    opts.mode(FILE_MODE);
    opts
}

/// Sets `path`'s mode to `mode` unless it already has no more than that.
#[cfg_attr(not(unix), allow(unused_variables))]
fn tighten(path: &Path, mode: u32) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path).map_err(fail("read", path))?;
        if meta.permissions().mode() & 0o777 & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(fail("restrict", path))?;
        }
    }
    Ok(())
}

/// Creates the store's folder with [`DIR_MODE`] (and its missing parents), or tightens it.
pub(super) fn private_dir(path: &Path) -> Result<(), StoreError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(DIR_MODE);
    b.create(path).map_err(fail("create", path))?;
    tighten(path, DIR_MODE)
}

/// Tightens every file and folder under the store's folder: what the database wrote with the
/// default mode, and a store made before files were private.
pub(super) fn tighten_tree(dir: &Path) -> Result<(), StoreError> {
    tighten(dir, DIR_MODE)?;
    let entries = std::fs::read_dir(dir).map_err(fail("read", dir))?;
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => tighten_tree(&path)?,
            Ok(t) if t.is_file() => tighten(&path, FILE_MODE)?,
            _ => {}
        }
    }
    Ok(())
}

/// Where appended records go.
pub(super) enum Sink {
    File { file: File, path: PathBuf },
    Memory(Vec<u8>),
}

impl Sink {
    pub(super) fn memory() -> Sink {
        Sink::Memory(Vec::new())
    }

    /// Opens (or creates) `path` and returns it with its contents. `whole` says how many leading
    /// bytes are whole records; anything after them was cut short by a crash and is removed.
    pub(super) fn open(
        path: &Path,
        whole: impl FnOnce(&[u8]) -> usize,
    ) -> Result<(Sink, Vec<u8>), StoreError> {
        Sink::open_tail(path, u64::MAX, whole)
    }

    /// As [`Sink::open`], reading only the last `max` bytes (all of them when the file is
    /// shorter): for a log whose start is not needed to go on appending. `whole` is applied to
    /// what was read.
    pub(super) fn open_tail(
        path: &Path,
        max: u64,
        whole: impl FnOnce(&[u8]) -> usize,
    ) -> Result<(Sink, Vec<u8>), StoreError> {
        let mut file = private(OpenOptions::new().create(true).read(true).append(true))
            .open(path)
            .map_err(fail("open", path))?;
        tighten(path, FILE_MODE)?;
        let len = file.metadata().map_err(fail("read", path))?.len();
        let start = len.saturating_sub(max);
        file.seek(SeekFrom::Start(start))
            .map_err(fail("read", path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(fail("read", path))?;
        let keep = match whole(&bytes).min(bytes.len()) {
            // Not one record boundary in a tail of a longer file: nothing to judge it by.
            0 if start > 0 => bytes.len(),
            keep => keep,
        };
        if keep != bytes.len() {
            tracing::warn!(path = %path.display(), bytes = bytes.len() - keep, "dropping a record cut short at the end of the file");
            file.set_len(start + keep as u64)
                .map_err(fail("repair", path))?;
            bytes.truncate(keep);
        }
        let sink = Sink::File {
            file,
            path: path.to_path_buf(),
        };
        Ok((sink, bytes))
    }

    /// Appends `bytes` in one write; on the disk (the page cache) when this returns.
    pub(super) fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Sink::File { file, path } => file.write_all(bytes).map_err(fail("append to", path)),
            Sink::Memory(m) => {
                m.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Everything written so far.
    pub(super) fn read(&self) -> Result<Vec<u8>, StoreError> {
        match self {
            Sink::File { path, .. } => std::fs::read(path).map_err(fail("read", path)),
            Sink::Memory(m) => Ok(m.clone()),
        }
    }

    /// Replaces the contents: written beside the file and renamed over it, so a crash in
    /// between leaves one whole file.
    pub(super) fn replace(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Sink::Memory(m) => *m = bytes,
            Sink::File { file, path } => {
                let tmp = path.with_extension("rewrite");
                let mut out = private(OpenOptions::new().create(true).write(true).truncate(true))
                    .open(&tmp)
                    .map_err(fail("rewrite", path))?;
                out.write_all(&bytes).map_err(fail("rewrite", path))?;
                out.sync_all().map_err(fail("rewrite", path))?;
                drop(out);
                std::fs::rename(&tmp, &*path).map_err(fail("replace", path))?;
                *file = OpenOptions::new()
                    .append(true)
                    .open(&*path)
                    .map_err(fail("open", path))?;
            }
        }
        Ok(())
    }

    /// Writes the file's data to the disk itself.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        match self {
            Sink::File { file, path } => file.sync_data().map_err(fail("sync", path)),
            Sink::Memory(_) => Ok(()),
        }
    }
}
