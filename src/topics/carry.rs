//! The registry across an in-place upgrade: a stream's subscription
//! written back out of its 4-byte route by name (the ids mean nothing to
//! the new code), a frame's topics by name, the active subscriptions; and
//! each of them taken in again by the new code.

use super::{Announce, Matcher, MatcherSpec, Subscription, Topics, keys::Sub};
use crate::handover::{MatcherRow, SubscriptionRow, from_unix_ms, unix_ms};
use crate::ring::Meta;

impl Topics {
    /// The subscription of the stream with `route`, by name.
    pub(crate) fn subscription_row(&self, route: u32) -> Option<SubscriptionRow> {
        match Sub::unpack(route) {
            Sub::None => None,
            Sub::One(topic) => Some(SubscriptionRow {
                routes: vec![self.matcher_row(Matcher::Exact(topic))?],
                ..SubscriptionRow::default()
            }),
            Sub::Many(index) => {
                let live = self.many.get(index as usize)?;
                let rows = |ms: &mut dyn Iterator<Item = Matcher>| -> Vec<MatcherRow> {
                    ms.filter_map(|m| self.matcher_row(m)).collect()
                };
                let announce = live.announce.as_ref().map(|a| a.events.clone());
                // A token's grants are kept even when they are none: that
                // is not the same as no token.
                let has_token = !live.grants.is_empty() || live.expires.is_some();
                Some(SubscriptionRow {
                    routes: rows(&mut live.routes.iter().map(|&(m, _)| m)),
                    grants: has_token.then(|| rows(&mut live.grants.iter().copied())),
                    expires_ms: live.expires.map(unix_ms),
                    announce,
                })
            }
        }
    }

    fn matcher_row(&self, matcher: Matcher) -> Option<MatcherRow> {
        Some(match matcher {
            Matcher::All => MatcherRow::All,
            Matcher::Exact(id) => {
                MatcherRow::Exact(String::from(&*self.topics.get(id as usize)?.name))
            }
            Matcher::Pattern(id) => {
                let key = &self.patterns.get(&id)?.key;
                match key.split_at(1) {
                    ("t", source) => MatcherRow::Template(source.to_owned()),
                    (_, source) => MatcherRow::Pattern(source.to_owned()),
                }
            }
        })
    }

    /// The stream now under slab key `key` had `row` in the old code: it
    /// subscribes again (its subscription events are not published again:
    /// it never left). Returns its route.
    pub(crate) fn subscribe_row(&mut self, key: usize, row: &SubscriptionRow) -> u32 {
        let spec = |rows: &[MatcherRow]| -> Vec<MatcherSpec> {
            rows.iter()
                .map(|row| match row {
                    MatcherRow::All => MatcherSpec::All,
                    MatcherRow::Exact(name) => MatcherSpec::Exact(name.clone()),
                    MatcherRow::Pattern(source) => MatcherSpec::Pattern(source.clone()),
                    MatcherRow::Template(source) => MatcherSpec::Template(source.clone()),
                })
                .collect()
        };
        let subscription = Subscription {
            routes: spec(&row.routes),
            grants: row.grants.as_deref().map(spec),
            expires: row.expires_ms.map(from_unix_ms),
            announce: (row.announce.clone()).map(|events| Box::new(Announce { events })),
        };
        self.subscribe(key, &subscription)
    }

    /// The names of a frame's topics.
    pub(crate) fn names(&self, meta: &Meta) -> Vec<String> {
        let name = |&id: &u32| self.topics.get(id as usize).map(|t| String::from(&*t.name));
        meta.topics.iter().filter_map(name).collect()
    }

    /// The active subscriptions, for the table.
    pub(crate) fn active_rows(&self) -> Vec<(String, serde_json::Value)> {
        (self.active.iter())
            .map(|(topic, doc)| (topic.clone(), doc.clone()))
            .collect()
    }

    /// The active subscriptions the old code knew.
    pub(crate) fn take_active(&mut self, rows: Vec<(String, serde_json::Value)>) {
        self.active.extend(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use url::Url;

    fn topics() -> Topics {
        Topics::new(Url::parse("https://hub.example/.well-known/mercure").unwrap())
    }

    /// A subscription goes out by name and comes back the same in a new
    /// registry, under a new key, whatever ids its topics had.
    #[test]
    fn a_subscription_comes_back_out_of_its_route() {
        let mut old = topics();
        // Ids taken by something else first: the new registry's differ.
        let _ = old.meta(&["/x".into(), "/y".into()], false, "#1".into());
        let expires = UNIX_EPOCH + Duration::from_millis(1_900_000_000_000);
        let announce = Announce {
            events: vec![("/s/1".into(), serde_json::json!({"id": "/s/1"}))],
        };
        let subs = [
            Subscription {
                routes: vec![MatcherSpec::Exact("/rooms/a".into())],
                ..Subscription::default()
            },
            Subscription {
                routes: vec![
                    MatcherSpec::Pattern("/books/{:id}".into()),
                    MatcherSpec::Template("/t/{x}".into()),
                    MatcherSpec::All,
                ],
                grants: Some(vec![MatcherSpec::Exact("/private".into())]),
                expires: Some(expires),
                announce: Some(Box::new(announce)),
            },
        ];
        let mut new = topics();
        for (key, sub) in subs.iter().enumerate() {
            let route = old.subscribe(key, sub);
            let row = old.subscription_row(route).unwrap();
            let json = serde_json::to_string(&row).unwrap();
            let row: SubscriptionRow = serde_json::from_str(&json).unwrap();
            let again = new.subscribe_row(key + 10, &row);
            assert_eq!(new.subscription_row(again).unwrap(), row, "{sub:?}");
            assert_eq!(row.routes.len(), sub.routes.len());
            assert_eq!(
                row.grants.as_ref().map(Vec::len),
                sub.grants.as_ref().map(Vec::len)
            );
            assert_eq!(row.expires_ms.map(from_unix_ms), sub.expires);
            assert_eq!(new.expires(again), sub.expires);
        }
        let meta = new.meta(&["/rooms/a".into()], false, "#2".into());
        assert_eq!(new.names(&meta), ["/rooms/a"]);
        let mut lists = Vec::new();
        new.lists_for(&meta, &mut lists);
        assert!(
            !lists.is_empty(),
            "the carried subscriber is on the topic's list"
        );
    }
}
