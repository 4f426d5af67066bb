//! A per-thread cache of control-block allocations.
//!
//! # Design
//!
//! Every spawn allocates one `ProcCell<T>` (control block plus result slot)
//! and frees it when the last of the runtime, the join handle and the
//! unparkers lets go. A malloc/free pair is a fifth of an empty proc's
//! spawn+join, so freed blocks are kept on this thread, in lists by size
//! class (64-byte steps up to `MAX_SIZE`, aligned to 64 like the control
//! block, see `Proc`), and handed out again to the next
//! spawn of the same class. Blocks are ordinary global-allocator blocks of
//! the class's layout, so any of them may be freed with `dealloc` at any
//! time; the lists are capped and emptied when the thread ends.
//!
//! Per thread rather than per runtime: a join handle may outlive its
//! runtime, and a thread-local needs no check that the runtime is alive.

use std::alloc::Layout;
use std::cell::RefCell;

/// Size classes are 64-byte steps, 64-byte aligned (a control block is
/// aligned to a cache line); larger blocks are not cached.
const STEP: usize = 64;
/// Largest cached block.
const MAX_SIZE: usize = 1024;
/// Blocks kept per class.
const MAX_PER_CLASS: usize = 256;
/// Number of classes.
const CLASSES: usize = MAX_SIZE / STEP;

/// The lists; their blocks are freed when the thread ends.
struct Cache([Vec<*mut u8>; CLASSES]);

impl Drop for Cache {
    fn drop(&mut self) {
        for (i, list) in self.0.iter_mut().enumerate() {
            let layout = class_layout(i);
            for p in list.drain(..) {
                // SAFETY: every cached block was allocated with its class's
                // layout and is owned by the cache alone.
                unsafe { std::alloc::dealloc(p, layout) };
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache([const { Vec::new() }; CLASSES])) };
}

/// The class of `layout`, if it is cached: its size rounded up to `STEP`,
/// alignment at most `STEP`.
#[inline(always)]
fn class(layout: Layout) -> Option<usize> {
    (layout.align() <= STEP && layout.size() <= MAX_SIZE && layout.size() > 0)
        .then(|| layout.size().div_ceil(STEP) - 1)
}

fn class_layout(class: usize) -> Layout {
    Layout::from_size_align((class + 1) * STEP, STEP).expect("class layout")
}

/// A block for `layout`: from the cache when one is there.
#[inline]
pub(crate) fn alloc(layout: Layout) -> *mut u8 {
    let Some(c) = class(layout) else {
        // SAFETY: control blocks are never zero-sized.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        return p;
    };
    let cached = CACHE
        .try_with(|cache| cache.borrow_mut().0[c].pop())
        .ok()
        .flatten();
    cached.unwrap_or_else(|| {
        let l = class_layout(c);
        // SAFETY: the class layout is non-zero-sized.
        let p = unsafe { std::alloc::alloc(l) };
        if p.is_null() {
            std::alloc::handle_alloc_error(l);
        }
        p
    })
}

/// Gives back a block made by [`alloc`] with the same `layout`.
///
/// # Safety
///
/// `p` came from `alloc(layout)` and nothing uses it any more.
#[inline]
pub(crate) unsafe fn free(p: *mut u8, layout: Layout) {
    let Some(c) = class(layout) else {
        // SAFETY: made by std::alloc::alloc with this layout (caller).
        unsafe { std::alloc::dealloc(p, layout) };
        return;
    };
    let kept = CACHE
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let list = &mut cache.0[c];
            (list.len() < MAX_PER_CLASS).then(|| list.push(p)).is_some()
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: the block has its class's layout (made by `alloc`).
        unsafe { std::alloc::dealloc(p, class_layout(c)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_block_is_handed_out_again() {
        let l = Layout::from_size_align(200, 8).unwrap();
        let a = alloc(l);
        // SAFETY: just allocated with `l`, unused.
        unsafe { free(a, l) };
        let b = alloc(l);
        assert_eq!(a, b);
        // SAFETY: as above.
        unsafe { free(b, l) };
    }

    #[test]
    fn big_and_overaligned_blocks_bypass_the_cache() {
        assert_eq!(
            class(Layout::from_size_align(MAX_SIZE + 1, 8).unwrap()),
            None
        );
        assert_eq!(class(Layout::from_size_align(128, 128).unwrap()), None);
        // A control block's alignment is cached.
        assert_eq!(class(Layout::from_size_align(256, 64).unwrap()), Some(3));
        let l = Layout::from_size_align(128, 128).unwrap();
        let p = alloc(l);
        assert_eq!(p as usize % 128, 0);
        // SAFETY: just allocated with `l`.
        unsafe { free(p, l) };
    }
}
