//! Who listens to what: the topics of the Mercure hub, the subscriptions
//! of its streams, and the lists the fan-out walks.
//!
//! An event's topics are interned once, when it enters the ring ([`Topics::meta`]):
//! a frame keeps small ids, and the URL patterns that match its topics,
//! worked out once per topic and pattern and cached per topic (a pattern
//! registered later is tried on the topic the next time an event of it
//! comes). A stream's subscription is kept here only when it is more than
//! one exact topic (`many`): a stream subscribed to one exact topic with no
//! token costs 4 bytes in the topic's list and nothing more; its
//! subscription, packed into 4 bytes ([`Topics::subscribe`]), rides in its
//! cursor, inside its 32-byte `Connection`. A topic costs about 56
//! bytes in each process that knows it: its record (48: its name inline
//! up to 22 bytes, its first three subscribers) and its place in the name
//! table. What URL patterns match it is kept apart, only while there are
//! patterns.
//!
//! The fan-out asks which lists to walk for a frame ([`Topics::lists_for`]):
//! the subscribers of each of its topics, of each pattern that matched, and
//! of `*`. Whether a stream gets a frame is decided by [`Filter`], the
//! ring's [`Wants`]: the routing matchers (the query's) select, and a
//! private frame also needs a grant of the stream's token.
//!
//! Lists are slabs of slab keys: a slot freed by a closing stream is reused,
//! and nothing moves, so a fan-out pass that walks a list a slice at a time
//! over several turns never skips a stream.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::SystemTime;

use hashbrown::HashTable;
use slab::Slab;
use url::Url;

use crate::ring::Meta;

mod carry;
mod filter;
mod keys;
mod matchers;
mod name;

use keys::{Keys, MAX_INDEX, Sub};
use matchers::test;
pub(crate) use matchers::{
    Announce, Compiled, MatcherSpec, SUBSCRIPTION_EVENT, Subscription, WILDCARD, compile,
    compile_template, default_base,
};
use name::Name;

/// Most rooms the dashboard frame lists.
pub(crate) const MAX_ROOMS_SHOWN: usize = 100;

/// An interned matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matcher {
    All,
    Exact(u32),
    Pattern(u32),
}

/// A subscription with its matchers interned, and the slot each routing
/// matcher holds in its list.
#[derive(Debug)]
pub(crate) struct Live {
    routes: Vec<(Matcher, u32)>,
    grants: Vec<Matcher>,
    expires: Option<SystemTime>,
    announce: Option<Box<Announce>>,
}

/// Where a stream is in a list: its place, when it was kept, or its key
/// to look for.
#[derive(Debug, Clone, Copy)]
enum Place {
    Slot(u32),
    Key(u32),
}

/// A list of slab keys the fan-out walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum List {
    Topic(u32),
    Pattern(u32),
    All,
}

struct Topic {
    name: Name,
    /// Frames and grants that name it (subscribers are in `subs`).
    refs: u32,
    subs: Keys,
}

/// The patterns that match a topic: the live ones of those below `checked`.
struct Matched {
    checked: u32,
    ids: Box<[u32]>,
}

struct Pattern {
    compiled: Compiled,
    refs: u32,
    subs: Keys,
    /// Its key in `Topics::sources`.
    key: String,
}

/// The registry: topics, patterns, subscriptions, lists.
pub(crate) struct Topics {
    base: Url,
    /// Topic ids by name: the names are the topics' own, hashed with
    /// `hasher` (a table of ids, not a map of copied names).
    names: HashTable<u32>,
    hasher: RandomState,
    topics: Slab<Topic>,
    /// By topic id, while any pattern is live.
    matched: HashMap<u32, Matched>,
    sources: HashMap<String, u32>,
    patterns: HashMap<u32, Pattern>,
    /// Pattern ids are never reused: a frame's `epoch` tells which
    /// patterns were known when it came.
    next_pattern: u32,
    all: Keys,
    /// The subscriptions that are not one exact topic without a token.
    many: Slab<Live>,
    /// The active subscriptions, by subscription event topic (with
    /// `--subscriptions`).
    active: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Topics {
    /// An empty registry; relative topics and patterns resolve against
    /// `base`, the hub's URL.
    pub(crate) fn new(base: Url) -> Topics {
        Topics {
            base,
            names: HashTable::new(),
            hasher: RandomState::new(),
            topics: Slab::new(),
            matched: HashMap::new(),
            sources: HashMap::new(),
            patterns: HashMap::new(),
            next_pattern: 0,
            all: Keys::default(),
            many: Slab::new(),
            active: Default::default(),
        }
    }

    /// The hub's URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// The id of topic `name`, if it is known.
    fn find(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        let topics = &self.topics;
        let found = self.names.find(hash, |&id| {
            topics.get(id as usize).is_some_and(|t| &*t.name == name)
        });
        found.copied()
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.find(name) {
            self.topics[id as usize].refs += 1;
            return id;
        }
        // The patterns are tried on it when an event of it first comes.
        let id = self.topics.insert(Topic {
            name: Name::new(name),
            refs: 1,
            subs: Keys::default(),
        }) as u32;
        let Topics {
            names,
            hasher,
            topics,
            ..
        } = self;
        let hash = hasher.hash_one(name);
        names.insert_unique(hash, id, |&other| {
            hasher.hash_one(&*topics[other as usize].name)
        });
        id
    }

    fn release_topic(&mut self, id: u32) {
        let Some(topic) = self.topics.get_mut(id as usize) else {
            return;
        };
        topic.refs = topic.refs.saturating_sub(1);
        if topic.refs == 0 && topic.subs.is_empty() {
            let topic = self.topics.remove(id as usize);
            self.matched.remove(&id);
            let hash = self.hasher.hash_one(&*topic.name);
            if let Ok(entry) = self.names.find_entry(hash, |&other| other == id) {
                entry.remove();
            }
        }
    }

    /// A URL pattern (`template` false) or a URI template, interned.
    fn intern_pattern(&mut self, source: &str, template: bool) -> Option<u32> {
        // The two kinds share the registry: the key says which.
        let key = format!("{}{source}", if template { 't' } else { 'u' });
        if let Some(&id) = self.sources.get(&key) {
            if let Some(p) = self.patterns.get_mut(&id) {
                p.refs += 1;
            }
            return Some(id);
        }
        let compiled = match template {
            true => compile_template(source)?,
            false => compile(source, &self.base)?,
        };
        let id = self.next_pattern;
        self.next_pattern += 1;
        self.patterns.insert(
            id,
            Pattern {
                compiled,
                refs: 1,
                subs: Keys::default(),
                key: key.clone(),
            },
        );
        self.sources.insert(key, id);
        Some(id)
    }

    fn release_pattern(&mut self, id: u32) {
        let Some(p) = self.patterns.get_mut(&id) else {
            return;
        };
        p.refs = p.refs.saturating_sub(1);
        if p.refs == 0
            && p.subs.is_empty()
            && let Some(p) = self.patterns.remove(&id)
        {
            self.sources.remove(&p.key);
            if self.patterns.is_empty() {
                // No pattern left: no topic needs its matches kept.
                self.matched = HashMap::new();
            }
        }
    }

    fn intern_matcher(&mut self, spec: &MatcherSpec) -> Option<Matcher> {
        Some(match spec {
            MatcherSpec::All => Matcher::All,
            MatcherSpec::Exact(name) => Matcher::Exact(self.intern(name)),
            MatcherSpec::Pattern(source) => Matcher::Pattern(self.intern_pattern(source, false)?),
            MatcherSpec::Template(source) => Matcher::Pattern(self.intern_pattern(source, true)?),
        })
    }

    fn release_matcher(&mut self, matcher: Matcher) {
        match matcher {
            Matcher::All => {}
            Matcher::Exact(id) => self.release_topic(id),
            Matcher::Pattern(id) => self.release_pattern(id),
        }
    }

    /// The patterns that match topic `id`, bringing its cache up to date.
    fn matched(&mut self, id: u32) -> &[u32] {
        if self.patterns.is_empty() {
            return &[];
        }
        let Topics {
            topics,
            matched,
            patterns,
            next_pattern,
            base,
            ..
        } = self;
        let Some(topic) = topics.get(id as usize) else {
            return &[];
        };
        let cache = matched.entry(id).or_insert_with(|| Matched {
            checked: 0,
            ids: Box::new([]),
        });
        let stale = cache.ids.iter().any(|pid| !patterns.contains_key(pid));
        if cache.checked < *next_pattern || stale {
            let mut ids: Vec<u32> = std::mem::take(&mut cache.ids).into_vec();
            for (&pid, p) in patterns.iter() {
                if pid >= cache.checked && test(&p.compiled, &topic.name, base) {
                    ids.push(pid);
                }
            }
            ids.retain(|pid| patterns.contains_key(pid));
            ids.sort_unstable();
            cache.checked = *next_pattern;
            cache.ids = ids.into_boxed_slice();
        }
        &cache.ids
    }

    /// The [`Meta`] of an event on `topics`: its topics interned (released
    /// with [`release_meta`](Self::release_meta) when the ring drops it),
    /// the patterns that match them.
    pub(crate) fn meta(&mut self, topics: &[String], private: bool, mercure_id: String) -> Meta {
        let ids: Vec<u32> = topics.iter().map(|t| self.intern(t)).collect();
        let mut patterns = Vec::new();
        for &id in &ids {
            patterns.extend_from_slice(self.matched(id));
        }
        patterns.sort_unstable();
        patterns.dedup();
        Meta {
            topics: ids.into_boxed_slice(),
            patterns: patterns.into_boxed_slice(),
            epoch: self.next_pattern,
            private,
            mercure_id: mercure_id.into_boxed_str(),
        }
    }

    /// The ring dropped a frame with this meta.
    pub(crate) fn release_meta(&mut self, meta: Meta) {
        for &id in meta.topics.iter() {
            self.release_topic(id);
        }
    }

    /// The lists a fan-out of a frame with `meta` walks.
    pub(crate) fn lists_for(&self, meta: &Meta, lists: &mut Vec<List>) {
        for &id in meta.topics.iter() {
            if self
                .topics
                .get(id as usize)
                .is_some_and(|t| !t.subs.is_empty())
            {
                lists.push(List::Topic(id));
            }
        }
        for &id in meta.patterns.iter() {
            if self.patterns.get(&id).is_some_and(|p| !p.subs.is_empty()) {
                lists.push(List::Pattern(id));
            }
        }
        if !self.all.is_empty() {
            lists.push(List::All);
        }
    }

    /// The slab key in `slot` of `list`, and how many slots it has: `None`
    /// for a list that is gone.
    pub(crate) fn slot(&self, list: List, slot: usize) -> Option<(Option<usize>, usize)> {
        let slab = match list {
            List::Topic(id) => &self.topics.get(id as usize)?.subs,
            List::Pattern(id) => &self.patterns.get(&id)?.subs,
            List::All => &self.all,
        };
        Some((slab.get(slot).map(|k| k as usize), slab.capacity()))
    }

    fn list_mut(&mut self, matcher: Matcher) -> Option<&mut Keys> {
        Some(match matcher {
            Matcher::All => &mut self.all,
            Matcher::Exact(id) => &mut self.topics.get_mut(id as usize)?.subs,
            Matcher::Pattern(id) => &mut self.patterns.get_mut(&id)?.subs,
        })
    }

    /// The stream under slab key `key` subscribes; returns its route, the
    /// subscription packed into 4 bytes, which the stream keeps and hands
    /// back to [`filter`](Self::filter), [`expires`](Self::expires) and
    /// [`unsubscribe`](Self::unsubscribe). Every matcher must have been
    /// checked (a pattern that does not compile is left out).
    pub(crate) fn subscribe(&mut self, key: usize, subscription: &Subscription) -> u32 {
        let mut routes = Vec::with_capacity(subscription.routes.len());
        for spec in &subscription.routes {
            let Some(matcher) = self.intern_matcher(spec) else {
                continue;
            };
            // The list holds the stream; the matcher's reference is the
            // list entry, so the interning's own reference goes.
            let slot = self.list_mut(matcher).map_or(0, |l| l.insert(key as u32));
            self.release_matcher(matcher);
            routes.push((matcher, slot));
        }
        let grants = subscription.grants.as_deref().unwrap_or_default();
        let grants: Vec<Matcher> = grants
            .iter()
            .filter_map(|spec| self.intern_matcher(spec))
            .collect();
        let plain = subscription.grants.is_none() && subscription.announce.is_none();
        let sub = match (&routes[..], &grants[..], subscription.expires) {
            (&[(Matcher::Exact(topic), _)], [], None) if plain && topic <= MAX_INDEX => {
                Sub::One(topic)
            }
            _ => Sub::Many(self.many.insert(Live {
                routes,
                grants,
                expires: subscription.expires,
                announce: subscription.announce.clone(),
            }) as u32),
        };
        sub.pack()
    }

    /// The stream under `key`, with `route`, is gone; its subscription
    /// events, if it has them, to say so.
    pub(crate) fn unsubscribe(&mut self, key: usize, route: u32) -> Option<Box<Announce>> {
        match Sub::unpack(route) {
            Sub::None => None,
            Sub::One(topic) => {
                self.leave(Matcher::Exact(topic), Place::Key(key as u32));
                None
            }
            Sub::Many(index) => {
                let live = self.many.try_remove(index as usize)?;
                for (matcher, slot) in live.routes {
                    self.leave(matcher, Place::Slot(slot));
                }
                for matcher in live.grants {
                    self.release_matcher(matcher);
                }
                live.announce
            }
        }
    }

    /// An event went out: if it is a subscription event, the list of
    /// active subscriptions follows it (so every process, every instance,
    /// knows them all, whoever holds the stream).
    pub(crate) fn note_subscription_event(&mut self, topic: &str, data: &str) {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(data) else {
            return;
        };
        if doc.get("active").and_then(serde_json::Value::as_bool) == Some(true) {
            self.active.insert(topic.to_owned(), doc);
        } else {
            self.active.remove(topic);
        }
    }

    /// The active subscriptions whose topic starts with `prefix`, in order.
    pub(crate) fn active(&self, prefix: &str) -> Vec<&serde_json::Value> {
        self.active
            .range(prefix.to_owned()..)
            .take_while(|(topic, _)| topic.starts_with(prefix))
            .map(|(_, doc)| doc)
            .collect()
    }

    /// Takes a stream out of a list, and the list's topic or pattern out
    /// of the registry if nothing else names it.
    fn leave(&mut self, matcher: Matcher, place: Place) {
        match (self.list_mut(matcher), place) {
            (Some(list), Place::Slot(slot)) => list.remove(slot),
            (Some(list), Place::Key(key)) => list.remove_key(key),
            (None, _) => {}
        }
        match matcher {
            Matcher::All => {}
            Matcher::Exact(id) => {
                if let Some(topic) = self.topics.get_mut(id as usize) {
                    topic.refs += 1;
                }
                self.release_topic(id);
            }
            Matcher::Pattern(id) => {
                if let Some(p) = self.patterns.get_mut(&id) {
                    p.refs += 1;
                }
                self.release_pattern(id);
            }
        }
    }

    /// The chat rooms with streams in them (exact subscribers of
    /// `/rooms/<name>`), and how many: at most [`MAX_ROOMS_SHOWN`].
    pub(crate) fn rooms(&self) -> std::collections::BTreeMap<String, u64> {
        self.topics
            .iter()
            .filter_map(|(_, t)| {
                let room = t.name.strip_prefix("/rooms/")?;
                (!t.subs.is_empty()).then(|| (room.to_owned(), t.subs.len() as u64))
            })
            .take(MAX_ROOMS_SHOWN)
            .collect()
    }

    /// When the token of the stream with `route` expires.
    pub(crate) fn expires(&self, route: u32) -> Option<SystemTime> {
        match Sub::unpack(route) {
            Sub::Many(index) => self.many.get(index as usize)?.expires,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Wants;

    fn exact(t: &str) -> MatcherSpec {
        MatcherSpec::Exact(t.to_owned())
    }

    fn pattern(p: &str) -> MatcherSpec {
        MatcherSpec::Pattern(p.to_owned())
    }

    /// The registry, and the route each stream got (a stream keeps its
    /// own in its cursor), by slab key.
    struct Reg {
        registry: Topics,
        routes: HashMap<usize, u32>,
    }

    impl Reg {
        fn new(base: Url) -> Reg {
            Reg {
                registry: Topics::new(base),
                routes: HashMap::new(),
            }
        }

        fn subscribe(&mut self, key: usize, subscription: &Subscription) {
            let route = self.registry.subscribe(key, subscription);
            self.routes.insert(key, route);
        }

        fn unsubscribe(&mut self, key: usize) {
            if let Some(route) = self.routes.remove(&key) {
                self.registry.unsubscribe(key, route);
            }
        }
    }

    impl std::ops::Deref for Reg {
        type Target = Topics;
        fn deref(&self) -> &Topics {
            &self.registry
        }
    }

    impl std::ops::DerefMut for Reg {
        fn deref_mut(&mut self) -> &mut Topics {
            &mut self.registry
        }
    }

    fn wants(reg: &Reg, key: usize, meta: &Meta) -> bool {
        let route = reg.routes.get(&key).copied().unwrap_or(Sub::NONE);
        reg.registry.filter(route).wants(meta, false)
    }

    #[test]
    fn exact_pattern_and_wildcard_routes() {
        let mut t = Reg::new(default_base());
        let sub = |routes| Subscription {
            routes,
            ..Subscription::default()
        };
        t.subscribe(1, &sub(vec![exact("/rooms/a")]));
        t.subscribe(2, &sub(vec![pattern("/rooms/:name")]));
        t.subscribe(3, &sub(vec![MatcherSpec::All]));
        t.subscribe(4, &sub(vec![pattern("https://example.com/books/:id")]));
        let a = t.meta(&["/rooms/a".into()], false, "#1".into());
        let b = t.meta(&["/rooms/b".into()], false, "#2".into());
        let book = t.meta(&["https://example.com/books/7".into()], false, "#3".into());
        assert_eq!(
            [1, 2, 3, 4].map(|k| wants(&t, k, &a)),
            [true, true, true, false]
        );
        assert_eq!(
            [1, 2, 3, 4].map(|k| wants(&t, k, &b)),
            [false, true, true, false]
        );
        assert_eq!(
            [1, 2, 3, 4].map(|k| wants(&t, k, &book)),
            [false, false, true, true]
        );
        let mut lists = Vec::new();
        t.lists_for(&b, &mut lists);
        assert_eq!(
            lists.len(),
            2,
            "the pattern's list and the wildcard's: {lists:?}"
        );
    }

    #[test]
    fn private_frames_need_a_grant_on_one_of_their_topics() {
        let mut t = Reg::new(default_base());
        let routes = vec![pattern("https://example.com/books/:id")];
        t.subscribe(
            1,
            &Subscription {
                routes: routes.clone(),
                ..Subscription::default()
            },
        );
        t.subscribe(
            2,
            &Subscription {
                routes: routes.clone(),
                grants: Some(vec![exact("https://example.com/books/1")]),
                expires: None,
                announce: None,
            },
        );
        t.subscribe(
            3,
            &Subscription {
                routes,
                grants: Some(vec![pattern("https://example.com/users/42/*")]),
                expires: None,
                announce: None,
            },
        );
        let one = t.meta(&["https://example.com/books/1".into()], true, "#1".into());
        let two = t.meta(&["https://example.com/books/2".into()], true, "#2".into());
        let alternate = t.meta(
            &[
                "https://example.com/books/2".into(),
                "https://example.com/users/42/books/2".into(),
            ],
            true,
            "#3".into(),
        );
        assert_eq!([1, 2, 3].map(|k| wants(&t, k, &one)), [false, true, false]);
        assert_eq!([1, 2, 3].map(|k| wants(&t, k, &two)), [false, false, false]);
        assert_eq!(
            [1, 2, 3].map(|k| wants(&t, k, &alternate)),
            [false, false, true]
        );
    }

    #[test]
    fn a_pattern_newer_than_a_frame_is_tried_on_it() {
        let mut t = Reg::new(default_base());
        let old = t.meta(&["/rooms/x".into()], false, "#1".into());
        t.subscribe(
            5,
            &Subscription {
                routes: vec![pattern("/rooms/:r")],
                ..Subscription::default()
            },
        );
        assert!(wants(&t, 5, &old));
        let new = t.meta(&["/rooms/x".into()], false, "#2".into());
        assert_eq!(&new.patterns[..], &[0]);
    }

    #[test]
    fn registry_forgets_what_nothing_names() {
        let mut t = Reg::new(default_base());
        let meta = t.meta(&["a".into(), "b".into()], false, "#1".into());
        let sub = Subscription {
            routes: vec![exact("a"), pattern("/x/:y")],
            grants: Some(vec![exact("c")]),
            expires: None,
            announce: None,
        };
        t.subscribe(9, &sub);
        assert_eq!(t.topics.len(), 3);
        t.release_meta(meta);
        assert_eq!(t.topics.len(), 2, "a (subscribed) and c (granted)");
        t.unsubscribe(9);
        assert_eq!(t.topics.len(), 0);
        assert!(t.patterns.is_empty() && t.sources.is_empty());
        t.subscribe(
            9,
            &Subscription {
                routes: vec![exact("a")],
                ..Subscription::default()
            },
        );
        assert!(matches!(Sub::unpack(t.routes[&9]), Sub::One(_)));
        // A topic's record, and the names found again after others left.
        assert_eq!(std::mem::size_of::<Topic>(), 48);
        for (key, name) in ["b", "c", "d", "e", "f"].into_iter().enumerate() {
            t.subscribe(
                key + 20,
                &Subscription {
                    routes: vec![exact(name)],
                    ..Subscription::default()
                },
            );
        }
        t.unsubscribe(9);
        assert_eq!(t.find("a"), None);
        assert!(
            ["b", "c", "d", "e", "f"]
                .iter()
                .all(|n| t.find(n).is_some())
        );
        assert_eq!(t.names.len(), 5);
    }
}
