//! The manifest parser shared by every text-based source and by tests: YAML text (one or more
//! `---`-separated documents) → `ParsedManifests`: the recognized objects with the line each
//! starts on, plus one `LoadError` per document that could not be used (bad YAML, an unknown
//! kind, a missing name), naming the file, line, kind and object. Pure: reading files and
//! watching them live in `file`.
use std::{fmt, path::PathBuf, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};
use serde::Deserialize;
use serde_yaml::Value;

use super::{secret, Object, DEFAULT_NAMESPACE};

/// A problem with one manifest (or one document of it). Displayed as one line:
/// `<file>:<line>[:<column>]: <kind> <ns/name>: <reason>`, unknown parts left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadError {
    pub file: Option<PathBuf>,
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// 1-based column, for YAML syntax errors.
    pub column: Option<usize>,
    /// 1-based position of the YAML document in the file.
    pub document: Option<usize>,
    /// The object's kind as written (`Ingress`, `ConfigMap`, ...).
    pub kind: Option<String>,
    /// `namespace/name`.
    pub object: Option<String>,
    pub reason: String,
    /// The YAML itself is malformed (as opposed to a well-formed document we cannot use).
    pub syntax: bool,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
                if let Some(column) = self.column {
                    write!(f, "{column}:")?;
                }
            }
            f.write_str(" ")?;
        }
        match (&self.kind, &self.object) {
            (Some(k), Some(o)) => write!(f, "{k} {o}: ")?,
            (Some(k), None) => write!(f, "{k}: ")?,
            (None, Some(o)) => write!(f, "{o}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for LoadError {}

/// A recognized object and where it was written.
#[derive(Clone, Debug)]
pub struct ParsedObject {
    pub object: Object,
    /// 1-based line of the document (or List) that held it.
    pub line: usize,
}

/// The outcome of parsing one manifest text.
#[derive(Clone, Debug, Default)]
pub struct ParsedManifests {
    pub objects: Vec<ParsedObject>,
    /// One per unusable document or List item; no `file` set.
    pub errors: Vec<LoadError>,
}

impl ParsedManifests {
    /// Some part of the text is not valid YAML (a truncated or half-saved file, typically).
    pub fn has_syntax_error(&self) -> bool {
        self.errors.iter().any(|e| e.syntax)
    }
}

/// Parses a (multi-document) YAML manifest text. Documents are split at `---` lines first, so a
/// malformed document costs only itself; empty documents are skipped; `v1 List` items are
/// expanded; objects without a namespace get `default`.
pub fn parse_manifests(text: &str) -> ParsedManifests {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = ParsedManifests::default();
    let mut document = 0;
    for chunk in split_documents(text) {
        for (i, doc) in serde_yaml::Deserializer::from_str(chunk.text).enumerate() {
            document += 1;
            // Documents after the first in a chunk follow a `...` marker: rare, line is approximate.
            let line = if i == 0 {
                chunk.content_line
            } else {
                chunk.line
            };
            let value = match Value::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    let (line, column) = match e.location() {
                        Some(l) => (chunk.line + l.line() - 1, Some(l.column())),
                        None => (line, None),
                    };
                    out.errors.push(LoadError {
                        line: Some(line),
                        column,
                        document: Some(document),
                        reason: format!("malformed YAML: {}", strip_location(&e, chunk.line)),
                        syntax: true,
                        ..LoadError::default()
                    });
                    break; // the parser cannot resynchronize inside this chunk
                }
            };
            let at = Place {
                line,
                chunk_line: chunk.line,
                document,
            };
            parse_document(chunk.text, i, value, at, &mut out);
        }
    }
    out
}

#[derive(Clone, Copy)]
struct Place {
    line: usize,
    chunk_line: usize,
    document: usize,
}

/// A piece of the text that starts at a `---` line (or at the top).
struct Chunk<'a> {
    text: &'a str,
    /// 1-based line of the chunk's first line.
    line: usize,
    /// 1-based line of the first line with content (not blank, comment, directive or bare `---`).
    content_line: usize,
}

fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let (mut start, mut start_line, mut content_line) = (0, 1, None);
    let mut offset = 0;
    let mut only_directives = true;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = n + 1;
        let line = raw.trim_end_matches(['\n', '\r']);
        let is_marker =
            line.starts_with("---") && (line.len() == 3 || line[3..].starts_with([' ', '\t']));
        // Directives (`%YAML`) belong to the document after them: keep them in the same chunk.
        if is_marker && offset > start && !only_directives {
            chunks.push(Chunk {
                text: &text[start..offset],
                line: start_line,
                content_line: content_line.unwrap_or(start_line),
            });
            (start, start_line, content_line) = (offset, line_no, None);
            only_directives = true;
        }
        let trimmed = line.trim();
        let blank = trimmed.is_empty() || trimmed.starts_with('#');
        if is_marker || !(blank || line.starts_with('%')) {
            only_directives = false;
        }
        let has_content = if is_marker {
            !line[3..].trim().is_empty() && !line[3..].trim().starts_with('#')
        } else {
            !blank && !line.starts_with('%') && line != "..."
        };
        if has_content && content_line.is_none() {
            content_line = Some(line_no);
        }
        offset += raw.len();
    }
    if offset > start {
        chunks.push(Chunk {
            text: &text[start..offset],
            line: start_line,
            content_line: content_line.unwrap_or(start_line),
        });
    }
    chunks
}

/// serde_yaml appends " at line L column C" (relative to the chunk) to its messages: drop the
/// main location (we report it in our own fields) and shift any other mark to file lines.
fn strip_location(e: &serde_yaml::Error, first_line: usize) -> String {
    let mut msg = e.to_string();
    if let Some(l) = e.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(i) = msg.find(&suffix) {
            msg.replace_range(i..i + suffix.len(), "");
        }
    }
    const MARK: &str = " at line ";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg.as_str();
    while let Some(i) = rest.find(MARK) {
        let after = &rest[i + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..i + MARK.len()]);
        match after[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + first_line - 1).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// `(kind, namespace/name)` as far as the document tells, for error messages.
fn describe(v: &Value) -> (Option<String>, Option<String>) {
    let kind = str_field(v, "kind").map(str::to_owned);
    let meta = v.get("metadata");
    let name = meta.and_then(|m| str_field(m, "name"));
    let ns = meta
        .and_then(|m| str_field(m, "namespace"))
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    (kind, name.map(|n| format!("{ns}/{n}")))
}

fn parse_document(chunk: &str, index: usize, value: Value, at: Place, out: &mut ParsedManifests) {
    if value.is_null() {
        return; // empty document (or only comments)
    }
    let (kind, object) = describe(&value);
    let error = |reason: String| LoadError {
        line: Some(at.line),
        document: Some(at.document),
        kind: kind.clone(),
        object: object.clone(),
        reason,
        ..LoadError::default()
    };
    if !value.is_mapping() {
        out.errors.push(error(
            "document is not a mapping (not a Kubernetes object); skipped".into(),
        ));
        return;
    }
    let api_version = str_field(&value, "apiVersion").unwrap_or("");
    let kind_str = str_field(&value, "kind").unwrap_or("");
    if (api_version, kind_str) == ("v1", "List") {
        let items = match value.get("items") {
            None | Some(Value::Null) => return,
            Some(Value::Sequence(items)) => items,
            Some(_) => {
                out.errors
                    .push(error("List items is not a sequence; skipped".into()));
                return;
            }
        };
        for (n, item) in items.iter().enumerate() {
            match object_from_value(item) {
                Ok(object) => out.objects.push(ParsedObject {
                    object,
                    line: at.line,
                }),
                Err(reason) => {
                    let (kind, object) = describe(item);
                    out.errors.push(LoadError {
                        kind,
                        object,
                        reason: format!("List item {n}: {reason}"),
                        ..error(String::new())
                    });
                }
            }
        }
        return;
    }
    // Known kinds are deserialized again from the text, so type errors carry their own line.
    let doc = serde_yaml::Deserializer::from_str(chunk).nth(index);
    let typed = match (api_version, kind_str, doc) {
        (_, _, None) => Err(Unknown),
        ("networking.k8s.io/v1", "Ingress", Some(d)) => {
            Ok(Ingress::deserialize(d).map(|o| Object::Ingress(Arc::new(fit::ingress(o)))))
        }
        ("v1", "Service", Some(d)) => {
            Ok(Service::deserialize(d).map(|o| Object::Service(Arc::new(fit::service(o)))))
        }
        ("discovery.k8s.io/v1", "EndpointSlice", Some(d)) => Ok(EndpointSlice::deserialize(d)
            .map(|o| Object::EndpointSlice(Arc::new(fit::endpoint_slice(o))))),
        ("v1", "Secret", Some(d)) => {
            Ok(Secret::deserialize(d).map(|o| Object::Secret(Arc::new(o))))
        }
        ("networking.k8s.io/v1", "IngressClass", Some(d)) => {
            Ok(IngressClass::deserialize(d).map(|o| Object::IngressClass(Arc::new(o))))
        }
        _ => Err(Unknown),
    };
    match typed {
        Err(Unknown) => out.errors.push(error(unknown_kind(api_version, kind_str))),
        Ok(Err(e)) => {
            let line = e.location().map(|l| at.chunk_line + l.line() - 1);
            out.errors.push(LoadError {
                line: line.or(Some(at.line)),
                ..error(format!(
                    "invalid {kind_str}: {}; skipped",
                    strip_location(&e, at.chunk_line)
                ))
            });
        }
        Ok(Ok(object)) => match finish(object) {
            Ok(object) => out.objects.push(ParsedObject {
                object,
                line: at.line,
            }),
            Err(reason) => out.errors.push(error(reason)),
        },
    }
}

struct Unknown;

fn unknown_kind(api_version: &str, kind: &str) -> String {
    if api_version.is_empty() || kind.is_empty() {
        "document has no apiVersion or kind; skipped".into()
    } else {
        format!("unsupported apiVersion/kind {api_version}/{kind}; skipped")
    }
}

/// A List item: its own apiVersion/kind decide its type.
fn object_from_value(v: &Value) -> Result<Object, String> {
    let api_version = str_field(v, "apiVersion").unwrap_or("");
    let kind = str_field(v, "kind").unwrap_or("");
    let invalid = |e: serde_yaml::Error| format!("invalid {kind}: {e}; skipped");
    let object = match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(Arc::new(
            serde_yaml::from_value(v.clone()).map_err(invalid)?,
        )),
        ("v1", "Service") => Object::Service(Arc::new(
            serde_yaml::from_value(v.clone()).map_err(invalid)?,
        )),
        ("discovery.k8s.io/v1", "EndpointSlice") => Object::EndpointSlice(Arc::new(
            serde_yaml::from_value(v.clone()).map_err(invalid)?,
        )),
        ("v1", "Secret") => Object::Secret(Arc::new(
            serde_yaml::from_value(v.clone()).map_err(invalid)?,
        )),
        ("networking.k8s.io/v1", "IngressClass") => Object::IngressClass(Arc::new(
            serde_yaml::from_value(v.clone()).map_err(invalid)?,
        )),
        _ => return Err(unknown_kind(api_version, kind)),
    };
    finish(object)
}

/// Checks the name and fills in the default namespace (cluster-scoped kinds get none);
/// keeps TLS Secrets only.
fn finish(mut object: Object) -> Result<Object, String> {
    let cluster_scoped = object.cluster_scoped();
    let meta = object.metadata_mut();
    if meta.name.as_deref().unwrap_or("").is_empty() {
        return Err("metadata.name is required; skipped".into());
    }
    if cluster_scoped {
        meta.namespace = None;
    } else if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
    if let Object::Secret(s) = &mut object {
        secret::accept(Arc::make_mut(s))?;
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Inputs;

    fn names(p: &ParsedManifests) -> Vec<String> {
        p.objects
            .iter()
            .map(|o| format!("{} {}@{}", o.object.kind(), o.object.key(), o.line))
            .collect()
    }

    #[test]
    fn multi_document_with_defaults_and_empty_documents() {
        let text = "\
# leading comment
apiVersion: v1
kind: Service
metadata: {name: a}
---
---
# only a comment
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: b, namespace: web}
--- # a comment on the marker
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: c}
addressType: IPv4
endpoints: []
";
        let p = parse_manifests(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(
            names(&p),
            [
                "Service default/a@2",
                "Ingress web/b@9",
                "EndpointSlice default/c@13"
            ]
        );
    }

    #[test]
    fn unknown_kind_is_reported_and_others_still_load() {
        let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: x}
---
apiVersion: v1
kind: Service
metadata: {name: a}
";
        let p = parse_manifests(text);
        assert_eq!(names(&p), ["Service default/a@5"]);
        assert_eq!(p.errors.len(), 1);
        let e = &p.errors[0];
        assert_eq!((e.line, e.document, e.syntax), (Some(1), Some(1), false));
        assert_eq!(
            e.to_string(),
            "ConfigMap x/cm: unsupported apiVersion/kind v1/ConfigMap; skipped"
        );
    }

    #[test]
    fn malformed_document_reports_line_and_column_and_costs_only_itself() {
        let text = "\
apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: v1
kind: Service
metadata: {name: b
---
apiVersion: v1
kind: Service
metadata: {name: c}
";
        let p = parse_manifests(text);
        assert_eq!(names(&p), ["Service default/a@1", "Service default/c@9"]);
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        let e = &p.errors[0];
        assert!(e.syntax && p.has_syntax_error());
        assert_eq!(e.document, Some(2));
        // The flow mapping opened on line 7 is never closed: the error is on line 7 or 8.
        assert!(matches!(e.line, Some(7 | 8)), "{e:?}");
        assert!(e.column.is_some());
        // Any mark left in the message is a file line, not a chunk line.
        assert_eq!(
            e.reason,
            "malformed YAML: did not find expected ',' or '}', \
             while parsing a flow mapping at line 7 column 11"
        );
    }

    #[test]
    fn parsed_lists_hold_no_spare_capacity() {
        let endpoints: String = (1..=5)
            .map(|i| format!("- addresses: [10.0.0.{i}]\n"))
            .collect();
        let text = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s}}\n\
             addressType: IPv4\nports: [{{port: 80}}, {{port: 81}}, {{port: 82}}]\n\
             endpoints:\n{endpoints}---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i}}\n\
             spec:\n  rules:\n  - http:\n      paths:\n      \
             - {{path: /a, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}\n      \
             - {{path: /b, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}\n      \
             - {{path: /c, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}\n"
        );
        let parsed = parse_manifests(&text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let Object::EndpointSlice(slice) = &parsed.objects[0].object else {
            panic!("not a slice: {:?}", parsed.objects[0]);
        };
        let list = slice.endpoints.as_ref().unwrap();
        assert_eq!((list.len(), list.capacity()), (5, 5));
        for e in list {
            assert_eq!(e.addresses.capacity(), 1);
        }
        let ports = slice.ports.as_ref().unwrap();
        assert_eq!((ports.len(), ports.capacity()), (3, 3));
        let Object::Ingress(ingress) = &parsed.objects[1].object else {
            panic!("not an Ingress: {:?}", parsed.objects[1]);
        };
        let rules = ingress.spec.as_ref().unwrap().rules.as_ref().unwrap();
        let paths = &rules[0].http.as_ref().unwrap().paths;
        assert_eq!((paths.len(), paths.capacity()), (3, 3));
    }

    #[test]
    fn type_errors_carry_the_line_of_the_bad_field() {
        let text = "\
apiVersion: v1
kind: Service
metadata: {name: ok}
---
apiVersion: v1
kind: Service
metadata:
  name: bad
spec:
  ports:
  - port: eighty
";
        let p = parse_manifests(text);
        assert_eq!(names(&p), ["Service default/ok@1"]);
        let e = &p.errors[0];
        assert!(!e.syntax);
        assert_eq!(e.line, Some(11), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("Service default/bad: invalid Service: "),
            "{e}"
        );
    }

    #[test]
    fn list_items_are_expanded() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: n}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: s}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: i}
";
        let p = parse_manifests(text);
        assert_eq!(names(&p), ["Service n/a@1", "Ingress default/i@1"]);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(
            p.errors[0].to_string(),
            "ConfigMap default/s: List item 1: unsupported apiVersion/kind v1/ConfigMap; skipped"
        );
    }

    #[test]
    fn missing_name_or_kind_and_non_mapping_documents() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {}\n---\nfoo: 1\n---\n- a\n";
        let p = parse_manifests(text);
        assert!(p.objects.is_empty());
        let reasons: Vec<_> = p.errors.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "metadata.name is required; skipped",
                "document has no apiVersion or kind; skipped",
                "document is not a mapping (not a Kubernetes object); skipped"
            ]
        );
        assert!(Inputs::from_yaml(text).is_err());
    }

    #[test]
    fn display_omits_unknown_parts() {
        let e = LoadError {
            file: Some("m/a.yaml".into()),
            line: Some(3),
            column: Some(9),
            reason: "malformed YAML: x".into(),
            ..LoadError::default()
        };
        assert_eq!(e.to_string(), "m/a.yaml:3:9: malformed YAML: x");
        let e = LoadError {
            file: Some("m/a.yaml".into()),
            kind: Some("Service".into()),
            object: Some("default/a".into()),
            reason: "gone".into(),
            ..LoadError::default()
        };
        assert_eq!(e.to_string(), "m/a.yaml: Service default/a: gone");
    }
}

/// Sequences in YAML come without a length, so the lists of a deserialized object grow by
/// doubling and keep up to half their capacity unused: for 10,000 EndpointSlices of 10
/// endpoints (an `Endpoint` is ~300 bytes) that is tens of MB held for the life of the file.
/// These trim the lists that are long or many in real clusters to their length, once per parse.
mod fit {
    use k8s_openapi::api::{
        core::v1::Service, discovery::v1::EndpointSlice, networking::v1::Ingress,
    };

    pub fn endpoint_slice(mut s: EndpointSlice) -> EndpointSlice {
        if let Some(endpoints) = &mut s.endpoints {
            endpoints.shrink_to_fit();
            for e in endpoints {
                e.addresses.shrink_to_fit();
            }
        }
        if let Some(ports) = &mut s.ports {
            ports.shrink_to_fit();
        }
        s
    }

    pub fn ingress(mut i: Ingress) -> Ingress {
        if let Some(spec) = &mut i.spec {
            if let Some(rules) = &mut spec.rules {
                rules.shrink_to_fit();
                for http in rules.iter_mut().filter_map(|r| r.http.as_mut()) {
                    http.paths.shrink_to_fit();
                }
            }
            if let Some(tls) = &mut spec.tls {
                tls.shrink_to_fit();
            }
        }
        i
    }

    pub fn service(mut s: Service) -> Service {
        if let Some(ports) = s.spec.as_mut().and_then(|s| s.ports.as_mut()) {
            ports.shrink_to_fit();
        }
        s
    }
}
