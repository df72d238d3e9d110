//! Table and folder tests of `FileSource::load`: merge order, duplicates, errors, last good
//! versions, and which files a load reads again.
use super::*;

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\n";

pub(in crate::source) fn svc(name: &str) -> String {
    SVC.replace("NAME", name)
}

pub(in crate::source) fn service_names(r: &LoadReport) -> Vec<String> {
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
    let read_at = |src: &FileSource, n: &str| {
        src.files[&OsString::from(n)]
            .parsed
            .as_ref()
            .unwrap()
            .read_at
    };
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
    assert!(std::sync::Arc::ptr_eq(
        &service(&first, "d"),
        &service(&second, "d")
    ));
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

/// The Service `name` a load served.
fn service(r: &LoadReport, name: &str) -> std::sync::Arc<k8s_openapi::api::core::v1::Service> {
    r.inputs
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("no Service {name} served"))
}

fn error_texts(r: &LoadReport) -> Vec<String> {
    r.errors.iter().map(ToString::to_string).collect()
}

/// Waits for the watcher to report a change (the debounce included).
async fn changed(w: &mut Watch) {
    let r = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
    assert_eq!(r.ok(), Some(true), "no change reported");
}

/// While watched, a load reads only the files events named, and still reports the whole
/// folder: the same objects and problems as a fresh full load of it.
#[tokio::test]
async fn a_watched_folder_reads_only_what_changed_and_reports_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..50 {
        fs::write(d.join(format!("s{i:02}.yaml")), svc(&format!("s{i:02}"))).unwrap();
    }
    // A problem and a duplicate that nothing below touches: reported by every load.
    fs::write(d.join("bad.yaml"), format!("{}---\nkind: [", svc("b"))).unwrap();
    fs::write(d.join("z-dup.yaml"), svc("s00")).unwrap();
    let mut src = FileSource::open(d).unwrap();
    let mut w = src.watch().unwrap();
    let first = src.load();
    assert_eq!(
        first.reads,
        ReadCounts {
            full: true,
            checked: 52,
            read: 52,
            parsed: 52
        }
    );
    assert_eq!(first.errors.len(), 2, "{:?}", error_texts(&first));

    let fresh = |d: &Path| FileSource::open(d).unwrap().load();
    fs::write(d.join("s07.yaml"), svc("seven")).unwrap();
    changed(&mut w).await;
    let r = src.load();
    let one = ReadCounts {
        full: false,
        checked: 1,
        read: 1,
        parsed: 1,
    };
    assert_eq!(r.reads, one);
    assert!(service_names(&r).contains(&"seven".to_owned()));
    assert_eq!(service_names(&r), service_names(&fresh(d)));
    assert_eq!(error_texts(&r), error_texts(&fresh(d)));
    assert_eq!(r.errors.len(), 2);
    // Unchanged files keep their objects (the same `Arc`s, for the translator's reuse).
    assert!(std::sync::Arc::ptr_eq(
        &service(&first, "s01"),
        &service(&r, "s01")
    ));

    // Nothing happened: nothing is looked at.
    let idle = src.load();
    assert_eq!(idle.reads, ReadCounts::default());
    assert_eq!(service_names(&idle), service_names(&r));

    // A deleted file and a new one.
    fs::remove_file(d.join("s08.yaml")).unwrap();
    fs::write(d.join("new.yml"), svc("new")).unwrap();
    changed(&mut w).await;
    let r = src.load();
    assert_eq!(
        (r.reads.full, r.reads.checked, r.reads.parsed),
        (false, 2, 1)
    );
    assert_eq!(r.files, 52);
    assert_eq!(service_names(&r), service_names(&fresh(d)));
    assert!(!service_names(&r).contains(&"s08".to_owned()));

    // The duplicate's first definition goes: the later file's object is served, no problem left.
    fs::remove_file(d.join("s00.yaml")).unwrap();
    changed(&mut w).await;
    let r = src.load();
    assert_eq!(error_texts(&r), error_texts(&fresh(d)));
    assert_eq!(r.errors.len(), 1, "{:?}", error_texts(&r));
    assert!(service_names(&r).contains(&"s00".to_owned()));

    // Once the watch is dropped, every load reads the whole folder again.
    drop(w);
    assert!(src.load().reads.full);
}

#[test]
fn read_counts_read_as_the_log_shows_them() {
    let full = ReadCounts {
        full: true,
        checked: 3,
        read: 2,
        parsed: 1,
    };
    assert_eq!(full.to_string(), "full, checked 3, read 2, parsed 1");
    let one = ReadCounts {
        checked: 1,
        read: 1,
        ..ReadCounts::default()
    };
    assert_eq!(one.to_string(), "checked 1, read 1, parsed 0");
}
