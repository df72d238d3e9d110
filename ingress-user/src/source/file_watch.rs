//! Watching a manifests folder: inotify events become debounced "reload now" signals for the
//! run loop, and a record of *which* files changed, so the next `FileSource::load` reads those
//! and nothing else.
//!
//! Flow: the notify callback (its own thread) classifies each event (`Pending::mark`): a
//! manifest file named in it is marked changed; a name that may change what the folder serves
//! without being a manifest file (`..data`, the symlink a ConfigMap volume swaps; any other
//! name; an event without a path; a queue overflow; a watcher error) marks the whole folder for
//! a full load; our own reads and editor temp files mark nothing. Anything marked sends a
//! signal; `Watch::changed` turns a burst of signals into one. `FileSource::load` takes the
//! marks (`Pending::take`) and reads what they name. A change made while a load runs is marked
//! again and signalled again, so it is read by the next load: nothing is missed.
use std::{
    collections::HashSet,
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use notify::{
    event::{AccessKind, AccessMode, Flag},
    EventKind, RecommendedWatcher,
};
use tokio::sync::mpsc;
use tracing::warn;

/// How long the folder must stay quiet before a change is reported.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(5);
/// A change is reported at the latest this long after it began, even if events keep coming.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// What changed in the folder since the last load, as far as the watcher knows.
#[derive(Debug)]
pub(super) struct Pending {
    /// A watcher is running: without one, nothing is marked and every load reads everything.
    watching: bool,
    /// Read the whole folder (the first load, and whenever events cannot name the change).
    all: bool,
    /// Manifest file names named by events since the last load.
    names: HashSet<OsString>,
}

/// What one load has to read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Changes {
    All,
    /// Only these names changed (created, written, renamed or deleted); possibly none.
    Names(Vec<OsString>),
}

impl Pending {
    pub(super) fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            watching: false,
            all: true,
            names: HashSet::new(),
        }))
    }

    /// Takes what changed since the last call; the next load starts from nothing marked.
    pub(super) fn take(&mut self) -> Changes {
        let all = std::mem::take(&mut self.all) || !self.watching;
        let names = std::mem::take(&mut self.names);
        if all {
            Changes::All
        } else {
            let mut names: Vec<_> = names.into_iter().collect();
            names.sort();
            Changes::Names(names)
        }
    }

    /// Marks the next load as a full one (a load that could not list the folder, say).
    pub(super) fn mark_all(&mut self) {
        self.all = true;
    }

    /// Records what `event` may have changed in `dir`; whether it may change what is served.
    fn mark(&mut self, dir: &Path, event: &notify::Event) -> bool {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false, // our own reads, and anybody else's
            _ => {}
        }
        if event.paths.is_empty() || event.flag() == Some(Flag::Rescan) {
            self.all = true;
            return true;
        }
        let mut relevant = false;
        for path in &event.paths {
            let name = match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) if parent == dir => name,
                _ => {
                    // The folder itself (deleted, moved) or something we cannot place.
                    self.all = true;
                    relevant = true;
                    continue;
                }
            };
            let Some(text) = name.to_str() else {
                continue; // not a name `load` would ever read
            };
            if super::file::is_editor_temp(text) {
                continue;
            }
            relevant = true;
            if super::file::is_manifest_name(name) {
                self.names.insert(name.to_owned());
            } else {
                // `..data` of a ConfigMap volume, a renamed directory, a file renamed from
                // another extension: cheaper to read the folder than to reason about it.
                self.all = true;
            }
        }
        relevant
    }
}

/// Debounced change notifications for a manifests folder. Dropping it stops the watcher, and
/// every later load reads the whole folder again.
#[derive(Debug)]
pub struct Watch {
    _watcher: RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<()>,
    dir: PathBuf,
    dead: bool,
    pending: Arc<Mutex<Pending>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut pending = lock(&self.pending);
        pending.watching = false;
        pending.all = true;
    }
}

pub(super) fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // The critical sections cannot panic half way; a poisoned lock still holds valid marks.
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watch {
    /// Starts watching `dir`; its events mark `pending`. The next load reads everything (what
    /// changed before the watcher started is not known).
    pub(super) fn start(dir: &Path, pending: &Arc<Mutex<Pending>>) -> notify::Result<Self> {
        use notify::{RecursiveMode, Watcher as _};
        let (tx, rx) = mpsc::unbounded_channel();
        let marks = Arc::clone(pending);
        let marks_dir = dir.to_path_buf();
        let mut watcher = notify::recommended_watcher(
            move |res: notify::Result<notify::Event>| {
                let relevant = match &res {
                    Ok(event) => lock(&marks).mark(&marks_dir, event),
                    Err(e) => {
                        warn!(error = %e, "manifests folder watcher error; reading the whole folder");
                        lock(&marks).all = true;
                        true
                    }
                };
                if relevant {
                    let _ = tx.send(());
                }
            },
        )?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        {
            let mut p = lock(pending);
            p.watching = true;
            p.all = true;
        }
        Ok(Self {
            _watcher: watcher,
            rx,
            dir: dir.to_path_buf(),
            dead: false,
            pending: Arc::clone(pending),
        })
    }

    /// Resolves once something changed in the folder and it then stayed quiet for ~5 ms (so an
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
    use std::fs;

    use notify::event::{CreateKind, ModifyKind, RenameMode};

    use super::{
        super::file::{
            tests::{service_names, svc},
            FileSource,
        },
        *,
    };

    fn event(kind: EventKind, dir: &Path, names: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for n in names {
            e = e.add_path(dir.join(n));
        }
        e
    }

    fn watching() -> Pending {
        Pending {
            watching: true,
            all: false,
            names: HashSet::new(),
        }
    }

    fn names(v: &[&str]) -> Changes {
        Changes::Names(v.iter().map(OsString::from).collect())
    }

    #[test]
    fn events_mark_the_names_they_name_or_the_whole_folder() {
        let dir = Path::new("/m");
        let write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let create = EventKind::Create(CreateKind::File);
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        // (event, signals a change, what the next load reads)
        let cases: Vec<(notify::Event, bool, Changes)> = vec![
            (event(write, dir, &["a.yaml"]), true, names(&["a.yaml"])),
            (event(read, dir, &["a.yaml"]), false, names(&[])),
            (
                event(rename, dir, &[".a.yaml.tmp", "a.yaml"]),
                true,
                names(&["a.yaml"]),
            ),
            (
                event(create, dir, &["b.yml", "a.yaml"]),
                true,
                names(&["a.yaml", "b.yml"]),
            ),
            (event(create, dir, &["x.yaml.swp"]), false, names(&[])),
            (event(create, dir, &["..data"]), true, Changes::All),
            (event(create, dir, &["notes.txt"]), true, Changes::All),
            (event(EventKind::Any, dir, &[]), true, Changes::All),
            (
                event(EventKind::Other, dir, &["a.yaml"]).set_flag(Flag::Rescan),
                true,
                Changes::All,
            ),
            (
                event(create, Path::new("/elsewhere"), &["a.yaml"]),
                true,
                Changes::All,
            ),
            (
                notify::Event::new(create).add_path(dir.to_path_buf()),
                true,
                Changes::All,
            ),
        ];
        for (event, signals, reads) in cases {
            let mut p = watching();
            assert_eq!(p.mark(dir, &event), signals, "{event:?}");
            assert_eq!(p.take(), reads, "{event:?}");
            assert_eq!(p.take(), names(&[]), "marks survived a take: {event:?}");
        }
    }

    #[test]
    fn without_a_watcher_every_load_reads_everything() {
        let mut p = watching();
        p.watching = false;
        assert_eq!(p.take(), Changes::All);
        assert_eq!(p.take(), Changes::All);
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

        // Many files at once: a change (one, unless the writes were more than the quiet time
        // apart, which a loaded machine can make happen; the trailing ones are drained here).
        for i in 0..5 {
            fs::write(d.join(format!("s{i}.yaml")), svc(&format!("s{i}"))).unwrap();
        }
        expect_change(&mut w).await;
        while let Ok(true) = tokio::time::timeout(Duration::from_millis(100), w.changed()).await {}
        assert_eq!(service_names(&src.load()).len(), 5);
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
        assert_eq!(service_names(&src.load()).len(), 4);

        // Editor swap files alone are not changes.
        fs::write(d.join(".s3.yaml.swp"), "x").unwrap();
        expect_quiet(&mut w).await;

        // The folder goes away: one last change, then `false`.
        drop(tmp);
        expect_change(&mut w).await;
        let last = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
        assert_eq!(last.ok(), Some(false));
    }

    /// A ConfigMap volume: every key is a symlink into `..data/`, and an update swaps the
    /// `..data` symlink; the keys' own names see no event.
    #[tokio::test]
    async fn a_configmap_style_symlink_swap_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let v1 = d.join("..v1");
        fs::create_dir(&v1).unwrap();
        fs::write(v1.join("app.yaml"), svc("one")).unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/app.yaml", d.join("app.yaml")).unwrap();
        let mut src = FileSource::open(&d).unwrap();
        let mut w = src.watch().unwrap();
        assert_eq!(service_names(&src.load()), ["one"]);

        let v2 = d.join("..v2");
        fs::create_dir(&v2).unwrap();
        fs::write(v2.join("app.yaml"), svc("two")).unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        expect_change(&mut w).await;
        assert_eq!(service_names(&src.load()), ["two"]);
    }
}
