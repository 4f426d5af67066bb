//! Stacks: the pool of power-of-two segments every proc runs on.
//!
//! # Design
//!
//! The note says each proc's stack is a linked list of stack pages, each a
//! power of two from a buddy allocator. procrt reserves one large range of
//! address space with `mmap(MAP_NORESERVE)` when a runtime starts and hands
//! it to a `buddy_system_allocator::Heap`; a `Segment` is one block of that
//! heap, `2^order` bytes at an address aligned to its size. Pages cost memory
//! only once touched, so a big reservation is free until procs use it.
//!
//! ```text
//!  high  +--------------------------+ base + size
//!        | SegmentHeader            |  magic, size, previous segment + its sp
//!        +--------------------------+ top: first stack pointer, 16-aligned
//!        | usable stack             |
//!        |           ...            |
//!        +--------------------------+ limit = bottom + LIMIT_MARGIN
//!        |                          |
//!        +--------------------------+ bottom = base + guard
//!        | guard page (PROT_NONE)   |  guarded mode only
//!  low   +--------------------------+ base
//! ```
//!
//! Facts kept true (checked by `StackPool` and its tests):
//! - A block inside the buddy heap is readable and writable: the heap keeps
//!   its free-list links in the first word of each free block, which is
//!   where the guard page lies. So the guard page is protected after the
//!   block leaves the heap and unprotected before it goes back.
//! - Released segments go to a per-order cache first, guard page still in
//!   place, so spawning and ending a proc costs no system call. Beyond the
//!   cache's high-water mark a released segment's pages are given back with
//!   `madvise(MADV_DONTNEED)` and the block returns to the buddy heap.
//! - Each guard page splits the reservation's mapping: a guarded segment
//!   costs two of the `vm.max_map_count` (65530 by default) mappings a
//!   process may have, so guarded mode tops out near 32k live segments.
//!   The kernel's refusal (`ENOMEM` from `mprotect`) is returned from
//!   `spawn` as [`SpawnError`](crate::SpawnError), never an abort.
//! - A hit on a guard page ends the process with a message naming the proc
//!   (`overflow.rs`); any other fault goes to the handler that was there
//!   before.
//!
//! Rejected: one `mmap` per stack (`may`, `stacker`): a system call per
//! spawn and a mapping per stack; copying stacks to grow them (Go): Rust
//! gives no map of the pointers into a stack.

mod foreign;
mod grow;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "x86")
))]
mod morestack;
mod overflow;
mod pool;

pub use foreign::{foreign, foreign_with, FOREIGN_STACK};
pub use grow::{grow, usage, StackUsage, DEFAULT_MAX_STACK};
pub(crate) use grow::{set_running_chain, try_grow, Chain, ENTRY_STACK};
pub(crate) use overflow::{install as install_overflow_handler, set_reporter, SignalBuf};
pub(crate) use pool::PoolConfig;
pub use pool::PoolStats;
pub(crate) use pool::{page_size, Segment, StackPool};

/// Smallest segment in guarded mode: one guard page plus one usable page
/// (release builds). Debug builds of procrt have frames several times
/// larger, and there the smallest segment is 16 KiB, so that a proc on it can
/// still call every runtime function.
pub const MIN_SEGMENT_GUARDED: usize = if cfg!(debug_assertions) {
    16 * 1024
} else {
    8 * 1024
};
/// Smallest segment without guard pages (8 KiB in debug builds).
pub const MIN_SEGMENT_UNGUARDED: usize = if cfg!(debug_assertions) {
    8 * 1024
} else {
    4 * 1024
};
/// Default first segment of a proc: 64 KiB of address space. Only touched
/// pages cost memory, so an idle proc costs about one page of it.
pub const DEFAULT_SEGMENT: usize = 64 * 1024;
/// Bytes between a segment's lowest usable address and the limit stored in
/// the TCB slot: the ABI's offset of the slot above the real bottom.
///
/// `LIMIT_MARGIN = 256 + 16 + MORESTACK_ROOM`: split-stack prologues let a
/// frame under 256 bytes skip the check (gcc and LLVM), two return
/// addresses go below it before `__morestack` runs, and `__morestack`
/// then runs on that old segment (its frame, and the Rust code that links
/// the next segment: `src/stack/morestack.rs`). libgcc keeps the same room
/// (its `BACKOFF`: 1536 bytes on x86_64, 1024 on i386); debug builds of
/// procrt have frames several times larger and keep 6 KiB.
pub const LIMIT_MARGIN: usize = SPLIT_SLACK + MORESTACK_ROOM;

/// The slack split-stack prologues assume below the limit (256 bytes)
/// plus the two return addresses pushed on the way into `__morestack`.
const SPLIT_SLACK: usize = 256 + 2 * std::mem::size_of::<usize>();

/// Stack `__morestack` and the Rust code it calls may use on the old
/// segment. Measured with the `split_stack` tests (painting the old
/// segment, taking a fresh segment from the pool, and finding the lowest
/// byte written): about 770 bytes on x86_64 and 420 on i686 in release
/// builds, 3.5 KiB on x86_64 in debug builds; the tests run on guarded
/// segments, where running out would hit a guard page.
const MORESTACK_ROOM: usize = if cfg!(debug_assertions) {
    6144 - SPLIT_SLACK
} else if cfg!(target_pointer_width = "64") {
    1536 - SPLIT_SLACK
} else {
    1024 - SPLIT_SLACK
};

/// Bytes of stack left between the caller's frame and the bottom of the
/// running proc's segment (its limit, less [`LIMIT_MARGIN`]); `None` where no
/// limit is recorded (on a thread's own stack, outside procs).
///
/// One load from the TCB's split-stack slot, which the switch keeps
/// current.
///
/// ```
/// procrt::run(|| {
///     let h = procrt::spawn(|| procrt::stack::remaining_stack().unwrap()).unwrap();
///     let left = h.join().unwrap();
///     assert!(left > 0 && left < procrt::stack::DEFAULT_SEGMENT);
/// });
/// assert_eq!(procrt::stack::remaining_stack(), None);
/// ```
#[inline]
pub fn remaining_stack() -> Option<usize> {
    let limit = crate::arch::stack_limit();
    if limit == 0 {
        return None;
    }
    Some(crate::arch::stack_pointer().saturating_sub(limit - LIMIT_MARGIN))
}
