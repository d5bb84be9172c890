//! Which shard a streamer belongs to, and how many shards one bridge should hold.
//!
//! Every bridge process must agree on a streamer's shard without talking to the others, so
//! the hash is a fixed one (FNV-1a over the Twitch id), not the standard library's seeded one.

/// The lease of shard `k` (node-redlock format, fenced like every lock).
pub fn shard_lease(shard: u32) -> String {
    format!("locks:realtime:shard:{shard}")
}

/// The shard of `streamer` among `shards`.
pub fn shard_of(streamer: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in streamer.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

/// How many shards one of `bridges` live bridge processes should hold at most: an even share,
/// rounded up, so that together they hold every shard.
pub fn fair_share(shards: u32, bridges: usize) -> u32 {
    shards.div_ceil(bridges.max(1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamer_always_lands_in_the_same_shard() {
        assert_eq!(shard_of("12345", 16), shard_of("12345", 16));
        assert_eq!(shard_of("anything", 1), 0);
        assert!(shard_of("12345", 16) < 16);
        assert_eq!(shard_lease(3), "locks:realtime:shard:3");
    }

    #[test]
    fn streamers_spread_over_the_shards() {
        let mut counts = [0usize; 16];
        for id in 1..=16_000 {
            counts[shard_of(&id.to_string(), 16) as usize] += 1;
        }
        for count in counts {
            assert!((700..1300).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn bridges_share_the_shards_evenly_and_hold_them_all() {
        assert_eq!(fair_share(16, 1), 16);
        assert_eq!(fair_share(16, 2), 8);
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(16, 0), 16);
        assert!(fair_share(16, 3) * 3 >= 16);
    }
}
