//! Which node should own which client: rendezvous hashing with bounded
//! loads. Every node computes the same answer from the same inputs (the
//! keys and the live nodes), so no node has to hand out the assignment.
//!
//! Each key ranks the nodes by a hash of (node, key). Keys are placed in a
//! fixed order, each on its best-ranked node that still has room; a node's
//! room is the fair share rounded up, so no node holds more than that and
//! none falls short of it by more than one per other node (a looser bound
//! lets one node run short: with 3 nodes and 10 % of slack, two full nodes
//! leave the third 20 % under its share). A node that joins or leaves moves
//! mostly its own share of keys.

use std::collections::HashMap;

/// 64-bit FNV-1a, then a finaliser so that near inputs spread.
fn score(node: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner each key should have, among `nodes` (none when there are no
/// nodes).
pub fn assign<'a>(keys: &'a [String], nodes: &[String]) -> HashMap<&'a str, String> {
    let mut out = HashMap::with_capacity(keys.len());
    if nodes.is_empty() {
        return out;
    }
    let room = keys.len().div_ceil(nodes.len());
    let mut load: HashMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 0)).collect();
    let mut order: Vec<&String> = keys.iter().collect();
    order.sort_unstable();
    for key in order {
        let mut ranked: Vec<&String> = nodes.iter().collect();
        ranked.sort_unstable_by_key(|n| std::cmp::Reverse((score(n, key), n.as_str())));
        let pick = ranked
            .iter()
            .find(|n| load[n.as_str()] < room)
            .unwrap_or(&ranked[0]);
        *load.entry(pick.as_str()).or_default() += 1;
        out.insert(key.as_str(), pick.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("client-{i}")).collect()
    }

    fn nodes(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| uuid::Uuid::from_u128(i as u128 * 7919 + 1).to_string())
            .collect()
    }

    fn loads(a: &HashMap<&str, String>) -> HashMap<String, usize> {
        let mut l = HashMap::new();
        for n in a.values() {
            *l.entry(n.clone()).or_default() += 1;
        }
        l
    }

    #[test]
    fn no_node_above_its_share_or_short_by_more_than_one_per_other_node() {
        for (k, n) in [(300, 3), (1000, 3), (301, 2), (5000, 7), (10, 3)] {
            let keys = keys(k);
            let a = assign(&keys, &nodes(n));
            assert_eq!(a.len(), k);
            let share = k as f64 / n as f64;
            for (_, l) in loads(&a) {
                assert!(
                    (l as f64) <= (share * 1.15).ceil() + 1.0,
                    "{k} keys on {n} nodes: {l}"
                );
            }
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_keys_and_some_for_balance() {
        let keys = keys(300);
        let all = nodes(3);
        let before = assign(&keys, &all);
        let after = assign(&keys, &all[..2]);
        let moved = keys
            .iter()
            .filter(|k| before[k.as_str()] != after[k.as_str()])
            .count();
        let lost = keys.iter().filter(|k| before[k.as_str()] == all[2]).count();
        // Every key of the departed node moves; others move only to keep
        // the bound.
        assert!(
            moved >= lost && moved <= lost + 40,
            "moved {moved}, lost {lost}"
        );
    }

    #[test]
    fn every_node_computes_the_same_answer_whatever_the_input_order() {
        let mut keys = keys(50);
        let mut n = nodes(3);
        let a = assign(&keys, &n)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>();
        keys.reverse();
        n.reverse();
        let b = assign(&keys, &n)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>();
        assert_eq!(a, b);
        assert!(assign(&keys, &[]).is_empty());
    }
}
