//! Which frames a Mercure stream wants: its routing matchers select, and a
//! private frame needs a grant of its token too ([`Filter`], the ring's
//! [`Wants`]), decided on a frame's interned topics and the patterns that
//! matched them when it came.

use super::matchers::test;
use super::{Live, Matcher, Sub, Topics};
use crate::ring::{Meta, Wants};

impl Topics {
    /// Which frames the stream with `route` wants.
    pub(crate) fn filter(&self, route: u32) -> Filter<'_> {
        match Sub::unpack(route) {
            Sub::One(topic) => Filter::One(topic),
            Sub::Many(index) => match self.many.get(index as usize) {
                Some(live) => Filter::Many(live, self),
                None => Filter::Nothing,
            },
            Sub::None => Filter::Nothing,
        }
    }

    fn matches(&self, matcher: Matcher, meta: &Meta) -> bool {
        match matcher {
            Matcher::All => true,
            Matcher::Exact(id) => meta.topics.contains(&id),
            Matcher::Pattern(id) if id < meta.epoch => meta.patterns.binary_search(&id).is_ok(),
            // A pattern newer than the frame (a stream that resumes from
            // the ring with a new pattern): tried now.
            Matcher::Pattern(id) => self.patterns.get(&id).is_some_and(|p| {
                meta.topics.iter().any(|t| {
                    self.topics
                        .get(*t as usize)
                        .is_some_and(|t| test(&p.compiled, &t.name, &self.base))
                })
            }),
        }
    }
}

/// Which frames a Mercure stream gets: the routing matchers select; a
/// private frame needs a grant too.
pub(crate) enum Filter<'a> {
    Nothing,
    One(u32),
    Many(&'a Live, &'a Topics),
}

impl Wants for Filter<'_> {
    fn wants(&self, meta: &Meta, _for_sse: bool) -> bool {
        match self {
            Filter::Nothing => false,
            Filter::One(topic) => !meta.private && meta.topics.contains(topic),
            Filter::Many(live, topics) => {
                live.routes.iter().any(|&(m, _)| topics.matches(m, meta))
                    && (!meta.private || live.grants.iter().any(|&m| topics.matches(m, meta)))
            }
        }
    }
}
