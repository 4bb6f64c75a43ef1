//! A slab with generational keys: a key of a removed entry never names the entry that reuses
//! its slot. Keys are `u32`: 20 bits of index, 12 of generation.

const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const GENERATION_MASK: u32 = (1 << (32 - INDEX_BITS)) - 1;

/// Most entries a slab can hold.
pub(crate) const MAX_ENTRIES: usize = 1 << INDEX_BITS;

struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new(limit: usize) -> Slab<T> {
        assert!(limit > 0 && limit <= MAX_ENTRIES);
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit,
        }
    }

    fn key(index: u32, generation: u32) -> u32 {
        generation << INDEX_BITS | index
    }

    /// Stores `value`; `None` if the slab is at its limit.
    pub(crate) fn insert(&mut self, value: T) -> Option<u32> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.entries.len() >= self.limit {
                    return None;
                }
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        debug_assert!(entry.value.is_none());
        entry.value = Some(value);
        self.len += 1;
        Some(Self::key(index, entry.generation))
    }

    pub(crate) fn get(&self, key: u32) -> Option<&T> {
        let entry = self.entries.get((key & INDEX_MASK) as usize)?;
        if entry.generation != key >> INDEX_BITS {
            return None;
        }
        entry.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: u32) -> Option<&mut T> {
        let entry = self.entries.get_mut((key & INDEX_MASK) as usize)?;
        if entry.generation != key >> INDEX_BITS {
            return None;
        }
        entry.value.as_mut()
    }

    pub(crate) fn remove(&mut self, key: u32) -> Option<T> {
        let index = key & INDEX_MASK;
        let entry = self.entries.get_mut(index as usize)?;
        if entry.generation != key >> INDEX_BITS {
            return None;
        }
        let value = entry.value.take()?;
        entry.generation = (entry.generation + 1) & GENERATION_MASK;
        self.free.push(index);
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.entries.iter().filter_map(|e| e.value.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_does_not_reach_the_reused_slot() {
        let mut s = Slab::new(4);
        let a = s.insert("a").unwrap();
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_limit_holds() {
        let mut s = Slab::new(2);
        s.insert(1).unwrap();
        s.insert(2).unwrap();
        assert_eq!(s.insert(3), None);
    }
}
