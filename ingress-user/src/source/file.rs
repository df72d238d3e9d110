//! The standalone source: a folder of Kubernetes YAML manifests, read into `Inputs` and watched.
//!
//! `FileSource::load` reads the folder (not recursive): every `*.yaml`/`*.yml` (hidden and editor
//! temp files skipped) is parsed with `source::parse_manifests`, and the objects of all files are
//! merged in file-name order: the first definition of a kind/namespace/name wins, later ones are
//! reported. Each file keeps the objects of its last version that was valid YAML, so a half-saved
//! file keeps serving what it served before ("nothing lost"); a deleted file drops its objects.
//!
//! A load reads only what changed. While the folder is watched (`FileSource::watch`, see
//! `file_watch`), inotify names the files that changed, and a load reads those and reuses every
//! other file's objects and problems as they were: a change to one file of 10,000 costs one
//! stat, one read and one parse. Without a watcher, for the first load, and when events cannot
//! name the change (a ConfigMap volume's `..data` swap, a queue overflow), a load lists the
//! folder and stats every file; a file whose metadata (size, modification and change times,
//! inode) has not changed since it was last read, and was last modified well before that read
//! (`RACY`), is not read again. A file read again with the same text (by hash) is not parsed
//! again, so its objects keep their `Arc`s and `translate::Translator` reuses what it built.
use std::{
    collections::{hash_map::Entry, BTreeMap},
    ffi::OsString,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use foldhash::{HashMap, HashMapExt as _};
use tracing::warn;

pub use super::file_watch::Watch;
use super::{
    file_watch::{self, Changes, Pending},
    parse_manifests, Inputs, LoadError, ParsedManifests, ParsedObject,
};

/// Why the manifests folder cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("manifests folder {}: does not exist", dir.display())]
    NotFound { dir: PathBuf },
    #[error("manifests folder {}: not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("manifests folder {}: cannot read: {source}", dir.display())]
    Unreadable { dir: PathBuf, source: io::Error },
    #[error("manifests folder {}: cannot watch: {source}", dir.display())]
    Watch { dir: PathBuf, source: notify::Error },
}

/// The outcome of one `FileSource::load`.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub inputs: Inputs,
    /// Every problem found (each also logged); the objects concerned are left out or kept from
    /// the file's last good version, as each error says.
    pub errors: Vec<LoadError>,
    /// Manifest files found in the folder.
    pub files: usize,
    /// Files stat-ed, read again or reused by this load (see `ReadCounts`).
    pub reads: ReadCounts,
}

/// How much of the folder one load touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// The whole folder was listed (no watcher, first load, or a change events could not name).
    pub full: bool,
    /// Files whose metadata was looked at.
    pub checked: usize,
    /// Files whose text was read.
    pub read: usize,
    /// Files whose text was parsed (read with a text not seen before).
    pub parsed: usize,
}

/// `full, checked 10000, read 10000, parsed 10000` or `checked 1, read 1, parsed 1`.
impl std::fmt::Display for ReadCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.full {
            f.write_str("full, ")?;
        }
        write!(
            f,
            "checked {}, read {}, parsed {}",
            self.checked, self.read, self.parsed
        )
    }
}

/// A file modified less than this before it was read may be modified again without its
/// metadata changing (file times have the resolution of the kernel's clock tick, and some file
/// systems only keep seconds): such a file is read again at the next full load.
const RACY: Duration = Duration::from_secs(2);

/// A folder of manifests. Holds what each file contributes between loads.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    /// File name → its state; name order is the merge order.
    files: BTreeMap<OsString, FileEntry>,
    /// What the watcher saw change since the last load.
    pending: Arc<Mutex<Pending>>,
}

/// One manifest file as the last load left it.
#[derive(Debug, Default)]
struct FileEntry {
    /// The objects it contributes now (its last good version's when the current one is broken).
    objects: Vec<ParsedObject>,
    /// The problems found when it was last read, with the file set.
    errors: Vec<LoadError>,
    /// The objects of its last version without YAML syntax errors.
    last_good: Option<Vec<ParsedObject>>,
    /// What its text parsed to, and the metadata it had when read.
    parsed: Option<Parsed>,
}

/// One file's parse, kept while its metadata does not change.
#[derive(Debug)]
struct Parsed {
    stamp: Stamp,
    /// When the text was read.
    read_at: SystemTime,
    /// A hash of the text, so a file read again with the same text is not parsed again.
    text_hash: u64,
    manifests: ParsedManifests,
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(text)
}

/// The metadata that changes when a file's content is replaced or rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether a parse made at `read_at` is still the file's: same metadata, and the file's
    /// last modification long enough before that read that a later one changed the times.
    fn still_valid(&self, now: &Stamp, read_at: SystemTime, mtime: Option<SystemTime>) -> bool {
        self == now && mtime.is_some_and(|m| m + RACY < read_at)
    }
}

/// Whether a load may trust a file's kept parse when its metadata says it has not changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trust {
    /// A full load: metadata decides.
    Stamp,
    /// The watcher named the file: read it.
    Never,
}

impl FileSource {
    pub fn open(dir: &Path) -> Result<Self, SourceError> {
        let dir = dir.to_path_buf();
        match fs::metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SourceError::NotFound { dir })
            }
            Err(source) => return Err(SourceError::Unreadable { dir, source }),
            Ok(m) if !m.is_dir() => return Err(SourceError::NotADirectory { dir }),
            Ok(_) => {}
        }
        if let Err(source) = fs::read_dir(&dir) {
            return Err(SourceError::Unreadable { dir, source });
        }
        Ok(Self {
            dir,
            files: BTreeMap::new(),
            pending: Pending::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads what changed in the folder since the last load (everything, the first time) and
    /// returns the whole folder's objects and problems. Never fails as a whole: problems are in
    /// `LoadReport::errors`.
    pub fn load(&mut self) -> LoadReport {
        let changes = file_watch::lock(&self.pending).take();
        let mut reads = ReadCounts::default();
        let mut folder_errors = Vec::new();
        match changes {
            Changes::Names(names) => {
                for name in names {
                    reads.checked += 1;
                    self.refresh(name, Trust::Never, &mut reads);
                }
            }
            Changes::All => {
                reads.full = true;
                match manifest_files(&self.dir) {
                    Ok(names) => {
                        self.files
                            .retain(|name, _| names.binary_search(name).is_ok());
                        for name in names {
                            reads.checked += 1;
                            self.refresh(name, Trust::Stamp, &mut reads);
                        }
                    }
                    Err(e) => {
                        // Cannot tell which files still exist: keep serving everything we had,
                        // and list the folder again next time.
                        file_watch::lock(&self.pending).mark_all();
                        folder_errors.push(LoadError {
                            file: Some(self.dir.clone()),
                            reason: format!(
                                "cannot list the manifests folder: {e}; keeping the objects of the last load"
                            ),
                            ..LoadError::default()
                        });
                    }
                }
            }
        }
        let mut report = finish(&self.dir, &self.files, folder_errors);
        report.reads = reads;
        report
    }

    /// Brings one file's entry up to date: read and parsed again as needed, or removed when the
    /// file is gone (or is not a file any more).
    fn refresh(&mut self, name: OsString, trust: Trust, reads: &mut ReadCounts) {
        let path = self.dir.join(&name);
        let kept = self.files.get(&name).and_then(|e| e.parsed.as_ref());
        let text = match read_file(&path, kept, trust, reads) {
            Read::Gone => {
                self.files.remove(&name);
                return;
            }
            Read::Failed(reason) => Err(reason),
            Read::Parsed(parsed) => Ok(parsed),
        };
        let entry = self.files.entry(name).or_default();
        let keep_note = |objects: &Vec<ParsedObject>| {
            format!(
                "; keeping the {} object(s) of its last good version",
                objects.len()
            )
        };
        entry.errors.clear();
        match text {
            Err(reason) => {
                entry.parsed = None;
                let note = entry.last_good.as_ref().map(keep_note).unwrap_or_default();
                entry.errors.push(LoadError {
                    file: Some(path),
                    reason: format!("{reason}{note}"),
                    ..LoadError::default()
                });
                entry.objects = entry.last_good.clone().unwrap_or_default();
            }
            Ok(parsed) => {
                let syntax_error = parsed.manifests.has_syntax_error();
                let fallback = match &entry.last_good {
                    Some(old) if syntax_error => Some(old),
                    _ => None,
                };
                for e in &parsed.manifests.errors {
                    let mut e = e.clone();
                    e.file = Some(path.clone());
                    if let (true, Some(old)) = (e.syntax, fallback) {
                        e.reason.push_str(&keep_note(old));
                    }
                    entry.errors.push(e);
                }
                entry.objects = match fallback {
                    Some(old) => old.clone(),
                    None => {
                        if !syntax_error {
                            entry.last_good = Some(parsed.manifests.objects.clone());
                        }
                        parsed.manifests.objects.clone()
                    }
                };
                entry.parsed = Some(parsed);
            }
        }
    }

    /// Starts watching the folder (start it before the first `load`, so no change slips in
    /// between). Drop the `Watch` to stop.
    pub fn watch(&self) -> Result<Watch, SourceError> {
        Watch::start(&self.dir, &self.pending).map_err(|source| SourceError::Watch {
            dir: self.dir.clone(),
            source,
        })
    }
}

/// What reading one file gave.
enum Read {
    /// No such file any more, or not a regular file.
    Gone,
    /// Unreadable, or not UTF-8: the reason.
    Failed(String),
    Parsed(Parsed),
}

/// Reads and parses the file at `path`, or takes `kept` as it is when `trust` allows and the
/// metadata says the file has not changed since; the same text is not parsed again.
fn read_file(path: &Path, kept: Option<&Parsed>, trust: Trust, reads: &mut ReadCounts) -> Read {
    // Follows symlinks (ConfigMap volumes link every key into `..data/`).
    let meta = match fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Read::Gone,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Read::Gone,
        Err(e) => return Read::Failed(format!("cannot read: {e}")),
    };
    let stamp = Stamp::of(&meta);
    if let (Some(p), Trust::Stamp) = (kept, trust) {
        if p.stamp.still_valid(&stamp, p.read_at, meta.modified().ok()) {
            return Read::Parsed(Parsed {
                manifests: p.manifests.clone(),
                ..*p
            });
        }
    }
    // `stamp` is from before the read: a change during the read makes the next full load read
    // the file again (and the watcher names it to the next load).
    let read_at = SystemTime::now();
    reads.read += 1;
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Read::Gone,
        Err(e) => return Read::Failed(format!("cannot read: {e}")),
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Read::Failed("not UTF-8 text".to_owned());
    };
    let hash = text_hash(&text);
    let manifests = match kept {
        Some(p) if p.text_hash == hash => p.manifests.clone(),
        _ => {
            reads.parsed += 1;
            parse_manifests(&text)
        }
    };
    Read::Parsed(Parsed {
        stamp,
        read_at,
        text_hash: hash,
        manifests,
    })
}

/// Merges the files' objects in name order (first definition wins, later ones are reported),
/// fills `Inputs`, logs every error.
fn finish(
    dir: &Path,
    files: &BTreeMap<OsString, FileEntry>,
    mut errors: Vec<LoadError>,
) -> LoadReport {
    let mut inputs = Inputs::default();
    // (kind, namespace, name) → (file name, line) of the first definition.
    let objects = files.values().map(|f| f.objects.len()).sum();
    let mut first: HashMap<(&'static str, &str, &str), (&OsString, usize)> =
        HashMap::with_capacity(objects);
    for (name, entry) in files {
        errors.extend(entry.errors.iter().cloned());
        for o in &entry.objects {
            match first.entry(identity(&o.object)) {
                Entry::Occupied(e) => {
                    let (first_name, first_line) = e.get();
                    errors.push(LoadError {
                        file: Some(dir.join(name)),
                        line: Some(o.line),
                        kind: Some(o.object.kind().to_owned()),
                        object: Some(o.object.key()),
                        reason: format!(
                            "duplicate: already defined at {}:{first_line}; ignored",
                            dir.join(first_name).display()
                        ),
                        ..LoadError::default()
                    });
                }
                Entry::Vacant(e) => {
                    e.insert((name, o.line));
                    inputs.push(o.object.clone());
                }
            }
        }
    }
    for e in &errors {
        warn!("{e}");
    }
    LoadReport {
        inputs,
        errors,
        files: files.len(),
        reads: ReadCounts::default(),
    }
}

/// What tells two objects apart (`Object::key` without building a string).
fn identity(o: &super::Object) -> (&'static str, &str, &str) {
    let m = o.metadata();
    let namespace = if o.cluster_scoped() {
        ""
    } else {
        m.namespace.as_deref().unwrap_or(super::DEFAULT_NAMESPACE)
    };
    (o.kind(), namespace, m.name.as_deref().unwrap_or(""))
}

/// Manifest file names in the folder, sorted. Whether each is a file is `read_file`'s business.
fn manifest_files(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if is_manifest_name(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// `*.yaml` / `*.yml`, not hidden, not an editor temp file.
pub(super) fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    if name.starts_with('.') || is_editor_temp(name) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Backup, swap and lock files that editors write next to the file being edited.
pub(super) fn is_editor_temp(name: &str) -> bool {
    name.ends_with('~')
        || name.ends_with('#')
        || name.starts_with(".#")
        || name == "4913" // vim probes whether it may create files in the folder
        || [".swp", ".swo", ".swx", ".swpx", ".tmp"]
            .iter()
            .any(|s| name.ends_with(s))
}

#[cfg(test)]
#[path = "file_tests.rs"]
pub(super) mod tests;
