//! `--topics T`: a topic workload, for a Mercure hub or any server whose
//! stream URL names a topic. Connection i (over all processes) follows
//! topic `t<k>`, k = i mod T: `{topic}` in the URL becomes that name. Each
//! post to `--publish` goes to the next topic in turn (`{topic}` in its
//! body) and its marker says which (`sseload<pid>m<n>t<k>`), so a
//! connection that receives another topic's update counts it as
//! misrouted, and the report counts, for each post, the connections of its
//! topic that never got it, and publish → the last of them.

/// The name `{topic}` becomes for topic `k`.
pub(crate) fn name(k: u32) -> String {
    format!("t{k}")
}

/// The topic of connection `index` (over all processes) of `topics`.
pub(crate) fn of(index: usize, topics: u32) -> u32 {
    (index % topics.max(1) as usize) as u32
}

/// `request` with every `{topic}` made topic `k`'s name.
pub(crate) fn request_for(request: &[u8], k: u32) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    text.replace("{topic}", &name(k)).into_bytes()
}

/// The topic a marker names (`...t<k>`), if any.
pub(crate) fn of_marker(marker: &str) -> Option<u32> {
    marker.rsplit_once('t')?.1.parse().ok()
}

/// How many of `connections` follow topic `k` of `topics`.
pub(crate) fn followers(k: u32, connections: usize, topics: u32) -> u64 {
    let topics = topics.max(1) as usize;
    let k = k as usize;
    (connections / topics + usize::from(k < connections % topics)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_spread_over_topics_and_markers_name_theirs() {
        assert_eq!((of(0, 3), of(4, 3), of(5, 3)), (0, 1, 2));
        assert_eq!(
            request_for(b"GET /hub?match=/x/{topic} HTTP/1.1\r\n", 7),
            b"GET /hub?match=/x/t7 HTTP/1.1\r\n"
        );
        assert_eq!(of_marker("sseload42m9t3"), Some(3));
        assert_eq!(of_marker("sseload42m9"), None);
        // 10 connections over 4 topics: 3, 3, 2, 2.
        let counts: Vec<u64> = (0..4).map(|k| followers(k, 10, 4)).collect();
        assert_eq!(counts, [3, 3, 2, 2]);
    }
}
