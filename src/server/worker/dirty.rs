//! The dirty list: the connections touched in this batch, each flushed once at its end.
//!
//! A connection is on the list while it carries the `DIRTY` flag: whoever sets the flag pushes its key,
//! and only the flush clears it. The flag lives and dies with the connection, so an entry is live only
//! while its slot holds a connection with the flag set. The entry of a connection released in the same
//! batch (a close-deadline tick and the close completion together) finds an empty slot, or a newer
//! connection without the flag (or with it, and then that connection is flushed once, as it should be):
//! [`DirtyList::pop_marked`] skips what is not live. Must never allocate in steady state (the vector
//! keeps its capacity) and never hand out a key whose slot was not checked.

/// Slab keys of the connections touched in this batch (a key may appear more than once).
#[derive(Debug, Default)]
pub(super) struct DirtyList {
    keys: Vec<u32>,
}

impl DirtyList {
    /// Adds a connection whose `DIRTY` flag the caller has just set.
    pub(super) fn push(&mut self, key: u32) {
        self.keys.push(key);
    }

    /// The next connection to flush: pops entries until `take_mark(key)` says the slot holds a
    /// connection that carried the `DIRTY` flag (and clears it). Entries of released connections, and
    /// repeated entries of one already flushed, are dropped.
    pub(super) fn pop_marked(&mut self, mut take_mark: impl FnMut(usize) -> bool) -> Option<usize> {
        while let Some(key) = self.keys.pop() {
            let key = key as usize;
            if take_mark(key) {
                return Some(key);
            }
        }
        None
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot table for the test: `Some(dirty)` for a live connection, `None` for a free slot.
    fn take(slots: &mut [Option<bool>], key: usize) -> bool {
        match slots.get_mut(key) {
            Some(Some(dirty)) => std::mem::replace(dirty, false),
            _ => false,
        }
    }

    #[test]
    fn released_connections_are_skipped() {
        let mut slots = vec![Some(true), Some(true), Some(true)];
        let mut list = DirtyList::default();
        for key in 0..3 {
            list.push(key);
        }
        // Connection 1 is released after being marked.
        slots[1] = None;
        let mut flushed = Vec::new();
        while let Some(key) = list.pop_marked(|key| take(&mut slots, key)) {
            flushed.push(key);
        }
        assert_eq!(flushed, vec![2, 0]);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn a_reused_slot_is_flushed_only_if_its_new_connection_is_marked() {
        let mut list = DirtyList::default();
        // Connection A in slot 0 marked, released; connection B takes slot 0 untouched.
        list.push(0);
        let mut slots = vec![Some(false)];
        assert_eq!(list.pop_marked(|key| take(&mut slots, key)), None);
        // B marked too: two entries for slot 0, B is flushed once.
        list.push(0);
        slots[0] = Some(true);
        list.push(0);
        assert_eq!(list.pop_marked(|key| take(&mut slots, key)), Some(0));
        assert_eq!(list.pop_marked(|key| take(&mut slots, key)), None);
    }

    #[test]
    fn keys_beyond_the_slab_are_skipped() {
        let mut list = DirtyList::default();
        list.push(7);
        let mut slots = vec![Some(true)];
        assert_eq!(list.pop_marked(|key| take(&mut slots, key)), None);
    }
}
