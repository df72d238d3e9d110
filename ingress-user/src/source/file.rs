//! The standalone source: a folder of Kubernetes YAML manifests, read into `Inputs` and watched.
//!
//! `FileSource::load` lists the folder (not recursive), reads every `*.yaml`/`*.yml` in name
//! order (hidden and editor temp files skipped), parses each with `source::parse_manifests`, and
//! merges the objects: the first definition of a kind/namespace/name wins, later ones are
//! reported. It remembers the objects of each file's last version that was valid YAML, so a
//! half-saved file keeps serving what it served before ("nothing lost"); a deleted file drops its
//! objects. A file whose metadata (size, modification and change times, inode) has not changed
//! since it was last read, and was last modified well before that read (`RACY`), is not read or
//! parsed again, and one read again with the same text (by hash) is not parsed again: a change to
//! one file of 10,000 costs one parse, not 10,000. `FileSource::watch`
//! turns inotify events on the folder into debounced "reload now" signals for the run loop, which
//! calls `load` again and re-translates.
use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    ffi::OsString,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use notify::{
    event::{AccessKind, AccessMode},
    EventKind, RecommendedWatcher, RecursiveMode, Watcher,
};
use tokio::sync::mpsc;
use tracing::warn;

use super::{parse_manifests, Inputs, LoadError, ParsedManifests, ParsedObject};

/// How long the folder must stay quiet before a change is reported.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(20);
/// A change is reported at the latest this long after it began, even if events keep coming.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

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
}

/// A file modified less than this before it was read may be modified again without its
/// metadata changing (file times have the resolution of the kernel's clock tick, and some file
/// systems only keep seconds): such a file is read again at the next load.
const RACY: Duration = Duration::from_secs(2);

/// A folder of manifests. Holds the last good objects of each file between loads.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    /// File name → objects of its last version without YAML syntax errors.
    last_good: HashMap<OsString, Vec<ParsedObject>>,
    /// File name → what its text parsed to, and the metadata it had when read.
    parsed: HashMap<OsString, Parsed>,
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
            last_good: HashMap::new(),
            parsed: HashMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the folder now. Never fails as a whole: problems are in `LoadReport::errors`.
    pub fn load(&mut self) -> LoadReport {
        let mut errors = Vec::new();
        let names = match manifest_files(&self.dir) {
            Ok(names) => names,
            Err(e) => {
                // Cannot tell which files still exist: keep serving everything we had.
                let mut names: Vec<_> = self.last_good.keys().cloned().collect();
                names.sort();
                errors.push(LoadError {
                    file: Some(self.dir.clone()),
                    reason: format!(
                        "cannot list the manifests folder: {e}; keeping the objects of the last load"
                    ),
                    ..LoadError::default()
                });
                let per_file = names
                    .into_iter()
                    .map(|n| {
                        let objects = self.last_good[&n].clone();
                        (self.dir.join(&n), objects)
                    })
                    .collect();
                return finish(per_file, errors, 0);
            }
        };
        let mut per_file = Vec::with_capacity(names.len());
        let mut present = HashSet::with_capacity(names.len());
        for name in names {
            let path = self.dir.join(&name);
            let text = match self.read(&name, &path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                Err(e) => Err(format!("cannot read: {e}")),
                Ok(None) => Err("not UTF-8 text".to_owned()),
                Ok(Some(parsed)) => Ok(parsed),
            };
            present.insert(name.clone());
            let last_good = self.last_good.get(&name);
            let keep_note = |objects: &Vec<ParsedObject>| {
                format!(
                    "; keeping the {} object(s) of its last good version",
                    objects.len()
                )
            };
            let objects = match text {
                Err(reason) => {
                    let note = last_good.map(keep_note).unwrap_or_default();
                    errors.push(LoadError {
                        file: Some(path.clone()),
                        reason: format!("{reason}{note}"),
                        ..LoadError::default()
                    });
                    last_good.cloned().unwrap_or_default()
                }
                Ok(parsed) => {
                    let syntax_error = parsed.has_syntax_error();
                    let fallback = match last_good {
                        Some(old) if syntax_error => Some(old),
                        _ => None,
                    };
                    for mut e in parsed.errors {
                        e.file = Some(path.clone());
                        if let (true, Some(old)) = (e.syntax, fallback) {
                            e.reason.push_str(&keep_note(old));
                        }
                        errors.push(e);
                    }
                    match fallback {
                        Some(old) => old.clone(),
                        None => {
                            if !syntax_error {
                                self.last_good.insert(name.clone(), parsed.objects.clone());
                            }
                            parsed.objects
                        }
                    }
                }
            };
            per_file.push((path, objects));
        }
        let files = present.len();
        self.last_good.retain(|name, _| present.contains(name));
        self.parsed.retain(|name, _| present.contains(name));
        finish(per_file, errors, files)
    }

    /// What the file's text parses to: the kept parse when the file has not changed since it
    /// was read, else a new read and parse (kept for next time). `None`: not UTF-8.
    fn read(&mut self, name: &OsString, path: &Path) -> io::Result<Option<ParsedManifests>> {
        let meta = fs::metadata(path)?;
        let stamp = Stamp::of(&meta);
        if let Some(p) = self.parsed.get(name) {
            if p.stamp.still_valid(&stamp, p.read_at, meta.modified().ok()) {
                return Ok(Some(p.manifests.clone()));
            }
        }
        // `stamp` is from before the read: a change during the read makes the next load read
        // the file again.
        let read_at = SystemTime::now();
        let bytes = fs::read(path)?;
        let Ok(text) = String::from_utf8(bytes) else {
            self.parsed.remove(name);
            return Ok(None);
        };
        let hash = text_hash(&text);
        let manifests = match self.parsed.get(name) {
            Some(p) if p.text_hash == hash => p.manifests.clone(),
            _ => parse_manifests(&text),
        };
        self.parsed.insert(
            name.clone(),
            Parsed {
                stamp,
                read_at,
                text_hash: hash,
                manifests: manifests.clone(),
            },
        );
        Ok(Some(manifests))
    }

    /// Starts watching the folder (start it before the first `load`, so no change slips in
    /// between). Drop the `Watch` to stop.
    pub fn watch(&self) -> Result<Watch, SourceError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let dir = self.dir.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match &res {
                Ok(event) => is_relevant(event),
                Err(e) => {
                    warn!(error = %e, "manifests folder watcher error; reloading");
                    true
                }
            };
            if relevant {
                let _ = tx.send(());
            }
        })
        .map_err(|source| SourceError::Watch {
            dir: dir.clone(),
            source,
        })?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|source| SourceError::Watch {
                dir: dir.clone(),
                source,
            })?;
        Ok(Watch {
            _watcher: watcher,
            rx,
            dir,
            dead: false,
        })
    }
}

/// Sorts out winners and duplicates, fills `Inputs`, logs every error.
fn finish(
    per_file: Vec<(PathBuf, Vec<ParsedObject>)>,
    mut errors: Vec<LoadError>,
    files: usize,
) -> LoadReport {
    let mut inputs = Inputs::default();
    let mut first: HashMap<(&'static str, String), (PathBuf, usize)> = HashMap::new();
    for (path, objects) in per_file {
        for o in objects {
            match first.entry((o.object.kind(), o.object.key())) {
                Entry::Occupied(e) => {
                    let (first_path, first_line) = e.get();
                    errors.push(LoadError {
                        file: Some(path.clone()),
                        line: Some(o.line),
                        kind: Some(o.object.kind().to_owned()),
                        object: Some(o.object.key()),
                        reason: format!(
                            "duplicate: already defined at {}:{first_line}; ignored",
                            first_path.display()
                        ),
                        ..LoadError::default()
                    });
                }
                Entry::Vacant(e) => {
                    e.insert((path.clone(), o.line));
                    inputs.push(o.object);
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
        files,
    }
}

/// Manifest file names in the folder, sorted.
fn manifest_files(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !is_manifest_name(&name) {
            continue;
        }
        // Follows symlinks (ConfigMap volumes link every key into `..data/`).
        match fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => names.push(name),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Unreadable: keep it, so `load` reports it (and keeps its last good version).
            Err(_) => names.push(name),
        }
    }
    names.sort();
    Ok(names)
}

/// `*.yaml` / `*.yml`, not hidden, not an editor temp file.
fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
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
fn is_editor_temp(name: &str) -> bool {
    name.ends_with('~')
        || name.ends_with('#')
        || name.starts_with(".#")
        || name == "4913" // vim probes whether it may create files in the folder
        || [".swp", ".swo", ".swx", ".swpx", ".tmp"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Whether an inotify event may change what `load` reads. Our own reads (open/close without
/// writing) and editor temp files are not; everything else, including hidden names (ConfigMap
/// volumes swap a `..data` symlink), is.
fn is_relevant(event: &notify::Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| !is_editor_temp(n))
        })
}

/// Debounced change notifications for a manifests folder.
#[derive(Debug)]
pub struct Watch {
    _watcher: RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<()>,
    dir: PathBuf,
    dead: bool,
}

impl Watch {
    /// Resolves once something changed in the folder and it then stayed quiet for ~20 ms (so an
    /// editor save or a `cp` of many files is one change). `false` when no change can come any
    /// more: the watcher stopped, or the folder itself is gone.
    pub async fn changed(&mut self) -> bool {
        if self.dead || self.rx.recv().await.is_none() {
            self.dead = true;
            return false;
        }
        let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
        loop {
            let quiet = tokio::time::Instant::now() + DEBOUNCE_QUIET;
            match tokio::time::timeout_at(quiet.min(deadline), self.rx.recv()).await {
                Ok(Some(())) if quiet < deadline => continue,
                Ok(None) => self.dead = true,
                _ => {}
            }
            break;
        }
        if !self.dir.is_dir() {
            warn!(dir = %self.dir.display(), "manifests folder is gone; no more reloads");
            self.dead = true;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\n";

    fn svc(name: &str) -> String {
        SVC.replace("NAME", name)
    }

    fn service_names(r: &LoadReport) -> Vec<String> {
        let mut v: Vec<_> = r
            .inputs
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_names_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = FileSource::open(&missing).unwrap_err();
        assert!(matches!(err, SourceError::NotFound { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
        let file = tmp.path().join("f.yaml");
        fs::write(&file, "").unwrap();
        let err = FileSource::open(&file).unwrap_err();
        assert!(matches!(err, SourceError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn reads_yaml_files_only_in_name_order_skipping_hidden_and_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("b.yml"), svc("b")).unwrap();
        fs::write(d.join("a.yaml"), svc("a")).unwrap();
        fs::write(d.join("c.YAML"), svc("c")).unwrap();
        fs::write(d.join(".hidden.yaml"), svc("hidden")).unwrap();
        fs::write(d.join("x.yaml~"), svc("backup")).unwrap();
        fs::write(d.join(".x.yaml.swp"), svc("swap")).unwrap();
        fs::write(d.join("notes.txt"), svc("txt")).unwrap();
        fs::create_dir(d.join("sub.yaml")).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/deep.yaml"), svc("deep")).unwrap();
        let mut src = FileSource::open(d).unwrap();
        let r = src.load();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.files, 3);
        let order: Vec<_> = r
            .inputs
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn duplicates_name_both_places_and_the_first_file_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let first = format!("{}spec: {{ports: [{{port: 1}}]}}\n", svc("dup"));
        let second = format!("# x\n{}spec: {{ports: [{{port: 2}}]}}\n", svc("dup"));
        fs::write(d.join("2.yaml"), second).unwrap();
        fs::write(d.join("1.yaml"), first).unwrap();
        let r = FileSource::open(d).unwrap().load();
        assert_eq!(r.inputs.services.len(), 1);
        let port = r.inputs.services[0]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port;
        assert_eq!(port, 1);
        assert_eq!(r.errors.len(), 1);
        let msg = r.errors[0].to_string();
        let (p1, p2) = (d.join("1.yaml"), d.join("2.yaml"));
        assert_eq!(
            msg,
            format!(
                "{}:2: Service default/dup: duplicate: already defined at {}:1; ignored",
                p2.display(),
                p1.display()
            )
        );
    }

    #[test]
    fn errors_name_the_file_and_other_documents_load() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let text = format!(
            "{}---\napiVersion: v9\nkind: Thing\nmetadata: {{name: t}}\n",
            svc("a")
        );
        fs::write(d.join("m.yaml"), text).unwrap();
        let r = FileSource::open(d).unwrap().load();
        assert_eq!(service_names(&r), ["a"]);
        assert_eq!(
            r.errors[0].to_string(),
            format!(
                "{}:5: Thing default/t: unsupported apiVersion/kind v9/Thing; skipped",
                d.join("m.yaml").display()
            )
        );
    }

    #[test]
    fn half_saved_file_keeps_its_last_good_version_and_deleted_file_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("a.yaml"), format!("{}---\n{}", svc("a1"), svc("a2"))).unwrap();
        fs::write(d.join("b.yaml"), svc("b")).unwrap();
        let mut src = FileSource::open(d).unwrap();
        assert_eq!(service_names(&src.load()), ["a1", "a2", "b"]);

        // Half written: the first document is fine, the second is cut in the middle.
        fs::write(
            d.join("a.yaml"),
            format!(
                "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: a2",
                svc("a1new")
            ),
        )
        .unwrap();
        let r = src.load();
        assert_eq!(service_names(&r), ["a1", "a2", "b"]);
        assert_eq!(r.errors.len(), 1);
        let msg = r.errors[0].to_string();
        assert!(msg.contains("a.yaml:"), "{msg}");
        assert!(msg.contains("malformed YAML"), "{msg}");
        assert!(
            msg.contains("keeping the 2 object(s) of its last good version"),
            "{msg}"
        );

        // Fixed: the new version is served and becomes the last good one.
        fs::write(d.join("a.yaml"), svc("a3")).unwrap();
        let r = src.load();
        assert!(r.errors.is_empty());
        assert_eq!(service_names(&r), ["a3", "b"]);

        fs::remove_file(d.join("a.yaml")).unwrap();
        let r = src.load();
        assert_eq!(service_names(&r), ["b"]);
        assert_eq!(r.files, 1);

        // Recreated broken: there is no last good version any more, only what parses is served.
        fs::write(d.join("a.yaml"), format!("{}---\nkind: [", svc("a4"))).unwrap();
        let r = src.load();
        assert_eq!(service_names(&r), ["a4", "b"]);
        assert!(!r.errors[0].reason.contains("last good"));
    }

    #[test]
    fn broken_file_without_history_serves_documents_before_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("a.yaml"), format!("{}---\nkey: \"open", svc("x"))).unwrap();
        let r = FileSource::open(d).unwrap().load();
        assert_eq!(service_names(&r), ["x"]);
        assert!(r.errors[0].syntax);
        assert!(r.errors[0].line.is_some() && r.errors[0].column.is_some());
    }

    #[test]
    fn an_unchanged_file_is_not_read_again_and_a_changed_one_is() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let old = SystemTime::now() - Duration::from_secs(60);
        for name in ["a.yaml", "b.yaml"] {
            fs::write(d.join(name), svc(&name[..1])).unwrap();
            let f = fs::File::options().write(true).open(d.join(name)).unwrap();
            f.set_modified(old).unwrap();
        }
        let mut src = FileSource::open(d).unwrap();
        assert_eq!(service_names(&src.load()), ["a", "b"]);
        let read_at = |src: &FileSource, n: &str| src.parsed[&OsString::from(n)].read_at;
        let (a1, b1) = (read_at(&src, "a.yaml"), read_at(&src, "b.yaml"));

        // Same size, same modification time: the inode or change time still tells.
        fs::write(d.join("b.yaml"), svc("c")).unwrap();
        let f = fs::File::options()
            .write(true)
            .open(d.join("b.yaml"))
            .unwrap();
        f.set_modified(old).unwrap();
        assert_eq!(service_names(&src.load()), ["a", "c"]);
        assert_eq!(read_at(&src, "a.yaml"), a1, "a.yaml was read again");
        assert!(read_at(&src, "b.yaml") > b1, "b.yaml was not read again");

        // Modified just now: read at every load until the modification is RACY old.
        fs::write(d.join("a.yaml"), svc("d")).unwrap();
        assert_eq!(service_names(&src.load()), ["c", "d"]);
        let a2 = read_at(&src, "a.yaml");
        let first = src.load();
        assert!(
            read_at(&src, "a.yaml") > a2,
            "a racily new file was trusted"
        );
        // ... but the same text is not parsed again: the same objects are served.
        let second = src.load();
        let d = |r: &LoadReport| {
            r.inputs
                .services
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some("d"))
                .cloned()
                .unwrap()
        };
        assert!(std::sync::Arc::ptr_eq(&d(&first), &d(&second)));
    }

    #[test]
    fn a_stamp_is_trusted_only_when_equal_and_older_than_the_read() {
        let now = SystemTime::now();
        let stamp = Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (4, 5),
            ctime: (6, 7),
        };
        let old = Some(now - RACY - Duration::from_secs(1));
        assert!(stamp.still_valid(&stamp, now, old));
        assert!(!stamp.still_valid(&stamp, now, Some(now - RACY / 2)));
        assert!(!stamp.still_valid(&stamp, now, None));
        let moved = Stamp { ino: 9, ..stamp };
        assert!(!stamp.still_valid(&moved, now, old));
    }

    async fn expect_change(w: &mut Watch) {
        let changed = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
        assert_eq!(changed.ok(), Some(true), "no change reported");
    }

    async fn expect_quiet(w: &mut Watch) {
        let r = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
        assert!(r.is_err(), "unexpected change reported: {r:?}");
    }

    #[tokio::test]
    async fn watch_sees_create_modify_rename_delete_debounced() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let mut src = FileSource::open(&d).unwrap();
        let mut w = src.watch().unwrap();

        // Many files at once: one change.
        for i in 0..5 {
            fs::write(d.join(format!("s{i}.yaml")), svc(&format!("s{i}"))).unwrap();
        }
        expect_change(&mut w).await;
        assert_eq!(src.load().inputs.services.len(), 5);
        expect_quiet(&mut w).await; // our own reads are not changes

        fs::write(d.join("s0.yaml"), svc("s0b")).unwrap();
        expect_change(&mut w).await;
        assert!(service_names(&src.load()).contains(&"s0b".to_owned()));

        // Editor-style save: write a temp file, rename it over the original.
        fs::write(d.join(".s1.yaml.tmp"), svc("s1b")).unwrap();
        fs::rename(d.join(".s1.yaml.tmp"), d.join("s1.yaml")).unwrap();
        expect_change(&mut w).await;
        assert!(service_names(&src.load()).contains(&"s1b".to_owned()));

        fs::remove_file(d.join("s2.yaml")).unwrap();
        expect_change(&mut w).await;
        assert_eq!(src.load().inputs.services.len(), 4);

        // Editor swap files alone are not changes.
        fs::write(d.join(".s3.yaml.swp"), "x").unwrap();
        expect_quiet(&mut w).await;

        // The folder goes away: one last change, then `false`.
        drop(tmp);
        expect_change(&mut w).await;
        let last = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
        assert_eq!(last.ok(), Some(false));
    }
}
