//! Reuse of route work from one rebuild to the next, so that a change to one Ingress or one
//! Service costs about one Ingress's or one host's work, not the whole table's.
//!
//! Two levels, both keyed by identity, never by a guess:
//! - Per Ingress (`units`): `routes::ingress_routes` depends only on the Ingress and the global
//!   strategy (fixed for a `Translator`). Sources hand over the same `Arc` for an object that did
//!   not change, so an Ingress whose `Arc` is the previous build's gets the previous
//!   `IngressRoutes` as is; the others are checked afresh.
//! - Per place (`table`): a host's `HostRoutes` (paths sorted, lookup index built, metric labels
//!   formatted) depends only on the winning drafts of that host and the `Backend` each one
//!   resolved to. When those are the very same drafts (same addresses inside the same
//!   `IngressRoutes`) and the very same `Arc<Backend>`s as in the previous build, the previous
//!   `Arc<HostRoutes>` is taken as is, and the new snapshot shares it with the old one (which is
//!   then cheap to drop, too).
//!
//! Addresses are compared only while what they point at is alive: `units` keeps the replaced
//! `IngressRoutes` (`retired`) until `table` has compared, so no draft of this build can sit at
//! the address of a draft the previous build recorded; each place's previous `HostRoutes` holds
//! its backends. A place is keyed by the host as written (`*.` kept for wildcards), and `""` for
//! the rules without host; it keeps the name its `RouteTable` map uses (shared, not copied per
//! build), and is forgotten by the first build that does not have it.
use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::networking::v1::Ingress;

use super::routes::{self, Draft, IngressRoutes};
use crate::model::{Backend, HostRoutes, PathRoute, RouteMetric, RouteTable, Strategy};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the previous build made, for the next one to take where nothing changed.
#[derive(Debug, Default)]
pub(super) struct RouteCache {
    /// The checked routes of each served Ingress, by the address of its `Arc<Ingress>` (held by
    /// the entry).
    units: FastMap<usize, Arc<IngressRoutes>>,
    /// The previous build's units, kept alive from `units` until `table` has compared addresses.
    retired: Option<FastMap<usize, Arc<IngressRoutes>>>,
    /// Each place's routes and what they were built from, by place.
    places: FastMap<Arc<str>, Place>,
    /// Counts `table` calls: a place not seen by the current one is gone.
    tables: u64,
}

#[derive(Debug)]
struct Place {
    /// The key of the place in its `RouteTable` map (the host, or a wildcard's suffix).
    name: Arc<str>,
    /// (draft address, backend address) of each route, sorted.
    sources: Box<[(usize, usize)]>,
    routes: Arc<HostRoutes>,
    /// The `tables` count of the last build that had this place.
    seen: u64,
}

fn addr<T>(t: &T) -> usize {
    t as *const T as usize
}

impl RouteCache {
    /// The checked routes of each of `ingresses` (the served ones, any order): the previous
    /// build's for an unchanged Ingress, checked now for the others. Call `table` after it in the
    /// same build.
    pub fn units(
        &mut self,
        ingresses: &[Arc<Ingress>],
        default_strategy: &Strategy,
    ) -> Vec<Arc<IngressRoutes>> {
        if self.retired.is_some() {
            // `table` was not called after the last `units`: the places may name drafts that are
            // about to be freed, so forget them rather than compare addresses.
            self.places.clear();
        }
        let mut previous = std::mem::take(&mut self.units);
        let mut units = FastMap::with_capacity_and_hasher(ingresses.len(), Default::default());
        let mut out = Vec::with_capacity(ingresses.len());
        // Equal patterns among the Ingresses checked now share one compiled program.
        let mut regexes = HashMap::new();
        for ingress in ingresses {
            let key = Arc::as_ptr(ingress) as usize;
            let unit = match previous.remove(&key) {
                Some(unit) => unit,
                None => Arc::new(routes::ingress_routes(
                    ingress,
                    default_strategy,
                    &mut regexes,
                )),
            };
            out.push(unit.clone());
            units.insert(key, unit);
        }
        self.units = units;
        self.retired = Some(previous);
        out
    }

    /// The route table of the winning `routes` (each with the backend it resolved to) and the
    /// default backend's route.
    pub fn table(
        &mut self,
        routes: &[(&Draft, &Arc<Backend>)],
        default_backend: Option<PathRoute>,
    ) -> RouteTable {
        self.tables += 1;
        let mut groups: FastMap<&str, Vec<(&Draft, &Arc<Backend>)>> =
            FastMap::with_capacity_and_hasher(self.places.len(), Default::default());
        for &(draft, backend) in routes {
            let place = draft.host.as_deref().unwrap_or("");
            groups.entry(place).or_default().push((draft, backend));
        }
        let mut table = RouteTable {
            default_backend,
            ..RouteTable::default()
        };
        table.hosts.reserve(groups.len());
        for (place, mut group) in groups {
            group.sort_unstable_by_key(|&(d, b)| (addr(d), Arc::as_ptr(b) as usize));
            let sources = group
                .iter()
                .map(|&(d, b)| (addr(d), Arc::as_ptr(b) as usize));
            let build = || {
                let paths = group.iter().map(|&(d, b)| path_route(d, b)).collect();
                Arc::new(HostRoutes::new(paths))
            };
            let entry = match self.places.get_mut(place) {
                Some(entry) => {
                    if !entry.sources.iter().copied().eq(sources.clone()) {
                        entry.sources = sources.collect();
                        entry.routes = build();
                    }
                    entry
                }
                None => {
                    // An exact host's key and table name are the same text: one allocation.
                    let (key, name): (Arc<str>, Arc<str>) = match place.strip_prefix("*.") {
                        Some(suffix) => (place.into(), suffix.into()),
                        None => {
                            let name: Arc<str> = place.into();
                            (name.clone(), name)
                        }
                    };
                    let entry = Place {
                        name,
                        sources: sources.collect(),
                        routes: build(),
                        seen: 0,
                    };
                    self.places.entry(key).or_insert(entry)
                }
            };
            entry.seen = self.tables;
            let routes = entry.routes.clone();
            match place {
                "" => table.any_host = routes,
                p if p.starts_with("*.") => {
                    table.wildcards.insert(entry.name.clone(), routes);
                }
                _ => {
                    table.hosts.insert(entry.name.clone(), routes);
                }
            }
        }
        let now = self.tables;
        self.places.retain(|_, p| p.seen == now);
        self.retired = None;
        table
    }
}

/// The route a winning draft becomes, served by `backend`.
pub(super) fn path_route(d: &Draft, backend: &Arc<Backend>) -> PathRoute {
    PathRoute {
        host: d.host.clone(),
        path: d.path.clone(),
        kind: d.kind,
        backend: backend.clone(),
        ingress: d.ingress.clone(),
        regex: d.regex.clone(),
        metric: RouteMetric::new(&d.ingress, d.host.as_deref(), &d.path),
    }
}
