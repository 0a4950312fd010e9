//! Writing a command's output (`--out`, `--plot`): `-` is standard output; a regular file (or
//! a path where nothing is yet) is replaced atomically, so a reader sees the old content or
//! the new, never a mix, and an interrupted run leaves no half-written file; anything else (a
//! symlink, a device such as `/dev/stdout` or `/dev/null`, a FIFO, `>(cmd)`) is opened and
//! written through, never replaced. A write that does not complete (a full disk) is an error.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `target`: standard output for `-`, see the module for the rest.
pub fn write_output(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut out = Output::create(target)?;
    out.write_all(bytes)?;
    out.finish()
}

/// An output being written (`-o`), streamed and buffered: standard output for `-`; a regular file (or a
/// path where nothing is yet) through a temporary file in the same folder that
/// [`Output::finish`] renames over it (dropped unfinished, the temporary file is removed and
/// the target left as it was); anything else written through.
pub struct Output {
    sink: Sink,
}

enum Sink {
    Stdout(io::BufWriter<io::StdoutLock<'static>>),
    Through(io::BufWriter<fs::File>),
    Atomic {
        file: io::BufWriter<fs::File>,
        temp: PathBuf,
        target: PathBuf,
        done: bool,
    },
}

impl Output {
    pub fn create(target: &Path) -> io::Result<Self> {
        let sink = if target.as_os_str() == "-" {
            Sink::Stdout(io::BufWriter::new(io::stdout().lock()))
        } else {
            // `symlink_metadata` does not follow a final symlink: only a path that itself is a
            // regular file may be renamed over.
            match fs::symlink_metadata(target) {
                Ok(meta) if meta.file_type().is_file() => atomic(target)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => atomic(target)?,
                Ok(meta) if meta.is_dir() => {
                    return Err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        format!("{} is a folder", target.display()),
                    ))
                }
                _ => Sink::Through(io::BufWriter::new(
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(target)?,
                )),
            }
        };
        Ok(Self { sink })
    }

    /// Flushes everything and, for a regular file, syncs and renames it into place. A write
    /// that did not complete (a full disk) is an error here at the latest.
    pub fn finish(mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(out) => out.flush(),
            Sink::Through(file) => {
                file.flush()?;
                // A regular file behind a symlink: make a late write error (full disk, quota)
                // show here. Devices and pipes cannot be synced, and need not be.
                let file = file.get_ref();
                if file.metadata()?.file_type().is_file() {
                    file.sync_all()?;
                }
                Ok(())
            }
            Sink::Atomic {
                file,
                temp,
                target,
                done,
            } => {
                file.flush()?;
                let file = file.get_ref();
                // Keep the permissions of the file being replaced.
                if let Ok(meta) = fs::metadata(&*target) {
                    file.set_permissions(meta.permissions())?;
                }
                file.sync_all()?;
                fs::rename(&*temp, &*target)?;
                *done = true;
                sync_dir(target.parent().unwrap_or(Path::new(".")));
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Stdout(out) => out.write(buf),
            Sink::Through(file) | Sink::Atomic { file, .. } => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(out) => out.flush(),
            Sink::Through(file) | Sink::Atomic { file, .. } => file.flush(),
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Sink::Atomic {
            temp, done: false, ..
        } = &self.sink
        {
            let _ = fs::remove_file(temp);
        }
    }
}

/// A temporary file beside `target`, to be renamed over it.
fn atomic(target: &Path) -> io::Result<Sink> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", target.display()),
        )
    })?;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    Ok(Sink::Atomic {
        file: io::BufWriter::new(file),
        temp,
        target: dir.join(name),
        done: false,
    })
}

/// Replaces the file at `path` with `bytes` through a temporary file (see [`Output`]).
#[cfg(test)]
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut out = Output {
        sink: atomic(path)?,
    };
    out.write_all(bytes)?;
    out.finish()
}

/// Makes the rename itself durable. Some file systems refuse to sync a folder; the rename has
/// still happened then, so this only logs.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot sync folder after rename");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::{write_atomic, write_output};
    use std::path::Path;

    #[test]
    fn an_unfinished_output_leaves_the_target_as_it_was() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.txt");
        std::fs::write(&path, b"old").unwrap();
        let mut out = super::Output::create(&path).unwrap();
        out.write_all(b"half of the new").unwrap();
        drop(out);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left"
        );
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        write_atomic(&path, b"second, longer content").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer content");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode, 0o640,
                "permissions of the replaced file were not kept"
            );
        }
        // Writing over a folder fails and cleans up after itself.
        let folder = dir.path().join("a-folder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inside"), b"x").unwrap();
        assert!(write_atomic(&folder, b"nope").is_err());
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a-folder", "events.json"]);
        // A missing folder is an error, not a panic.
        assert!(write_atomic(&dir.path().join("missing/x.json"), b"x").is_err());
    }

    #[test]
    fn a_regular_file_is_replaced_by_rename_not_rewritten_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.json");
        std::fs::write(&path, b"old").unwrap();
        // A second name for the old file: an in-place rewrite would change it too.
        let old = dir.path().join("old-link");
        std::fs::hard_link(&path, &old).unwrap();
        write_output(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read(&old).unwrap(), b"old");
        // A path where nothing is yet is created the same way.
        let fresh = dir.path().join("fresh.json");
        write_output(&fresh, b"fresh").unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"fresh");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["events.json", "fresh.json", "old-link"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_written_through_and_stays_a_symlink() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("target.json");
        std::fs::write(&target, b"old content, longer than the new").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_output(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A dangling link creates its target, as `cat > link` does.
        let dangling = dir.path().join("dangling.json");
        let missing = dir.path().join("missing.json");
        std::os::unix::fs::symlink(&missing, &dangling).unwrap();
        write_output(&dangling, b"made").unwrap();
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&missing).unwrap(), b"made");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_written_directly_while_a_reader_reads_it() {
        use std::io::Read;
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("events.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        // More than a pipe holds, so the writer must wait for the reader.
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                std::fs::File::open(&fifo)
                    .unwrap()
                    .read_to_end(&mut got)
                    .unwrap();
                got
            })
        };
        write_output(&fifo, &bytes).unwrap();
        assert_eq!(reader.join().unwrap(), bytes);
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file next to the FIFO");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devices_are_written_not_replaced_and_a_full_device_is_an_error() {
        use std::os::unix::fs::FileTypeExt;
        let full = Path::new("/dev/full");
        let err = write_output(full, b"anything").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
        assert!(std::fs::metadata(full)
            .unwrap()
            .file_type()
            .is_char_device());
        write_output(Path::new("/dev/null"), b"gone").unwrap();
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        // A folder is refused, not replaced.
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(write_output(dir.path(), b"x").is_err());
        assert!(dir.path().is_dir());
    }
}
