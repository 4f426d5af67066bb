//! `StackPool`: one reservation, a buddy heap over it, a per-order cache.

use super::{LIMIT_MARGIN, MIN_SEGMENT_GUARDED, MIN_SEGMENT_UNGUARDED};
use crate::error::{SpawnError, SpawnErrorKind};
use buddy_system_allocator::Heap;
use std::alloc::Layout;
use std::io;
use std::ptr::NonNull;

/// Number of buddy orders: blocks up to `2^(HEAP_ORDERS - 1)` bytes.
#[cfg(target_pointer_width = "64")]
const HEAP_ORDERS: usize = 48;
#[cfg(target_pointer_width = "32")]
const HEAP_ORDERS: usize = 32;

/// Default reservation: 64 GiB of address space on 64-bit targets, 1 GiB on
/// 32-bit ones (a 32-bit process has 3-4 GiB in all). If the kernel refuses
/// the default, it is halved until it fits, down to 64 MiB.
#[cfg(target_pointer_width = "64")]
const DEFAULT_RESERVATION: usize = 64 << 30;
#[cfg(target_pointer_width = "32")]
const DEFAULT_RESERVATION: usize = 1 << 30;
const MIN_DEFAULT_RESERVATION: usize = 64 << 20;

/// Default high-water mark of the per-order cache, in bytes of segments.
const DEFAULT_CACHE_LIMIT: usize = 64 << 20;

/// Debug switch: fill released segments with 0xdb so a stale pointer into a
/// dead stack reads garbage instead of plausible data.
const POISON_FREED_SEGMENTS: bool = false;

/// Written into every live segment's header; checked when it is released.
const SEGMENT_MAGIC: usize = 0x5345_474d; // "SEGM"

/// Settings of a [`StackPool`], chosen on the runtime's builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolConfig {
    /// Bytes of address space to reserve; rounded up to whole pages.
    pub(crate) reservation: usize,
    /// Whether each segment gets a `PROT_NONE` guard page below it.
    pub(crate) guarded: bool,
    /// High-water mark of the cache of released segments, in bytes.
    pub(crate) cache_limit: usize,
    /// True when `reservation` was not chosen by the user and may shrink.
    pub(crate) default_reservation: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            reservation: DEFAULT_RESERVATION,
            guarded: true,
            cache_limit: DEFAULT_CACHE_LIMIT,
            default_reservation: true,
        }
    }
}

/// Counters of a runtime's stack pool, as returned by
/// [`Runtime::pool_stats`](crate::Runtime::pool_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of address space reserved.
    pub reserved_bytes: usize,
    /// Segments handed out and not yet released.
    pub live_segments: usize,
    /// The largest `live_segments` has been.
    pub peak_live_segments: usize,
    /// Bytes of the live segments.
    pub live_bytes: usize,
    /// Released segments kept in the cache.
    pub cached_segments: usize,
    /// Bytes of the cached segments.
    pub cached_bytes: usize,
    /// Segments handed out since the pool was made.
    pub total_allocs: u64,
    /// Of those, how many came from the cache (no system call).
    pub cache_hits: u64,
}

/// One stack segment: the block `[base, base + size)` of the pool.
///
/// `size` is a power of two and `base` is aligned to it. In guarded mode the
/// page `[base, base + page)` is `PROT_NONE`; the header occupies the top
/// `HEADER_BYTES`; the usable stack is `[bottom, top)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Lowest address of the block.
    base: usize,
    /// Size of the block: `2^order` bytes.
    size: usize,
    /// Bytes at the bottom that are a guard page (0 when unguarded).
    guard: usize,
}

/// Header at the top of every live segment: the link of a proc's chain.
#[repr(C)]
struct SegmentHeader {
    /// `SEGMENT_MAGIC` while the segment is live.
    magic: usize,
    /// Size of the block.
    size: usize,
    /// Base of the previous segment in the proc's chain (valid when
    /// `prev_size != 0`).
    prev_base: usize,
    /// Size of the previous segment; 0 when this is the first.
    prev_size: usize,
    /// Stack pointer on the previous segment when this one was linked.
    prev_sp: usize,
}

/// Bytes the header occupies at the top of a segment (16-byte multiple).
const HEADER_BYTES: usize = (std::mem::size_of::<SegmentHeader>() + 15) & !15;

impl Segment {
    /// A segment of the same pool (same guard size) at `base`, of `size`
    /// bytes.
    #[inline]
    pub(crate) fn with_base_and_size(&self, base: usize, size: usize) -> Segment {
        Segment {
            base,
            size,
            guard: self.guard,
        }
    }
    /// Lowest address of the block.
    #[inline]
    pub(crate) fn base_addr(&self) -> usize {
        self.base
    }
    /// Size of the block in bytes.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.size
    }
    /// The first stack pointer: just below the header, 16-byte aligned.
    #[inline]
    pub(crate) fn top(&self) -> usize {
        self.base + self.size - HEADER_BYTES
    }
    /// Lowest usable address (just above the guard page).
    #[inline]
    pub(crate) fn bottom(&self) -> usize {
        self.base + self.guard
    }
    /// The value kept in the TCB's split-stack slot while this segment runs.
    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.bottom() + LIMIT_MARGIN
    }
    /// Usable bytes: `top - bottom`.
    #[inline]
    pub(crate) fn usable(&self) -> usize {
        self.top() - self.bottom()
    }
    /// The guard page, `[base, base + guard)`; empty when unguarded.
    #[inline]
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.base, self.base + self.guard)
    }

    #[inline]
    fn header(&self) -> *mut SegmentHeader {
        (self.base + self.size - HEADER_BYTES) as *mut SegmentHeader
    }

    /// The previous segment in the chain and the stack pointer it was left
    /// at, from this (live) segment's header.
    #[inline]
    pub(crate) fn prev(&self) -> Option<(Segment, usize)> {
        // SAFETY: a Segment value is only used while it is live, and a live
        // segment's header is mapped read-write.
        let h = unsafe { &*self.header() };
        let prev = Segment {
            base: h.prev_base,
            size: h.prev_size,
            guard: self.guard,
        };
        (h.prev_size != 0).then_some((prev, h.prev_sp))
    }

    /// Records the previous segment of the chain in this (live) segment's
    /// header.
    #[inline]
    pub(crate) fn set_prev(&self, prev: Option<(Segment, usize)>) {
        // SAFETY: as in `prev`; only the owning proc's chain writes it.
        let h = unsafe { &mut *self.header() };
        let (b, s, sp) = prev.map_or((0, 0, 0), |(p, sp)| (p.base, p.size, sp));
        h.prev_base = b;
        h.prev_size = s;
        h.prev_sp = sp;
    }
}

/// A reservation of address space carved into power-of-two stack segments.
///
/// # State
/// Every block of the reservation is in exactly one of three places: free in
/// the buddy heap (read-write, possibly never touched), in `cache` (guard
/// page protected, header stale), or live (handed out as a [`Segment`],
/// header valid).
pub(crate) struct StackPool {
    /// Start of the `mmap` reservation.
    map_base: usize,
    /// Length of the reservation in bytes.
    map_len: usize,
    /// The buddy heap managing `[map_base, map_base + map_len)`.
    heap: Heap<HEAP_ORDERS>,
    /// Released segments by order, most recently released last.
    cache: Vec<Vec<usize>>,
    /// Whether segments carry a guard page.
    guarded: bool,
    /// System page size.
    page: usize,
    /// Smallest segment size this pool hands out.
    min_segment: usize,
    /// High-water mark of `stats.cached_bytes`.
    cache_limit: usize,
    /// Counters.
    stats: PoolStats,
    /// Set when a segment could not be returned safely; the reservation is
    /// then left mapped on drop rather than pulled from under it.
    leaked: bool,
}

impl StackPool {
    /// Reserves address space and builds the pool.
    pub(crate) fn new(config: PoolConfig) -> io::Result<StackPool> {
        let page = page_size();
        let mut len = config.reservation.div_ceil(page) * page;
        let base = loop {
            // SAFETY: a fresh anonymous private mapping at an address of the
            // kernel's choosing touches no existing memory.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                break p as usize;
            }
            let err = io::Error::last_os_error();
            if config.default_reservation && len / 2 >= MIN_DEFAULT_RESERVATION {
                len /= 2;
                continue;
            }
            return Err(io::Error::new(
                err.kind(),
                format!("procrt: cannot reserve {len} bytes for stacks: {err}"),
            ));
        };
        let mut heap = Heap::<HEAP_ORDERS>::new();
        // SAFETY: [base, base + len) is a fresh read-write mapping owned by
        // this pool and by nothing else; it lives until the pool is dropped.
        unsafe { heap.add_to_heap(base, base + len) };
        let min_segment = if config.guarded {
            MIN_SEGMENT_GUARDED
        } else {
            MIN_SEGMENT_UNGUARDED
        };
        Ok(StackPool {
            map_base: base,
            map_len: len,
            heap,
            cache: (0..HEAP_ORDERS).map(|_| Vec::new()).collect(),
            guarded: config.guarded,
            page,
            min_segment: min_segment.max(page),
            cache_limit: config.cache_limit,
            stats: PoolStats {
                reserved_bytes: len,
                ..PoolStats::default()
            },
            leaked: false,
        })
    }

    /// Smallest segment size this pool hands out.
    pub(crate) fn min_segment(&self) -> usize {
        self.min_segment
    }

    /// The pool's counters.
    pub(crate) fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Rounds a requested size to the segment size the pool would hand out.
    /// Saturates at the largest power of two (which `alloc` then refuses
    /// as too large) instead of overflowing.
    #[inline]
    pub(crate) fn segment_size_for(&self, bytes: usize) -> usize {
        bytes
            .max(self.min_segment)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1))
    }

    /// Hands out a segment of `size` bytes (a power of two, at least
    /// `min_segment`), from the cache when one is there. The cache hit is
    /// inline (every spawn takes it); a fresh block is out of line.
    #[inline(always)]
    pub(crate) fn alloc(&mut self, size: usize) -> Result<Segment, SpawnError> {
        assert!(
            size.is_power_of_two() && size >= self.min_segment,
            "procrt: segment size {size} is not a power of two >= {}",
            self.min_segment
        );
        let order = size.trailing_zeros() as usize;
        if let Some(base) = self.cache.get_mut(order).and_then(Vec::pop) {
            self.stats.cached_segments -= 1;
            self.stats.cached_bytes -= size;
            self.stats.cache_hits += 1;
            return Ok(self.hand_out(base, size));
        }
        self.alloc_fresh(size, order)
    }

    /// `alloc` without a cached block: takes one from the heap.
    #[cold]
    #[inline(never)]
    fn alloc_fresh(&mut self, size: usize, order: usize) -> Result<Segment, SpawnError> {
        if order >= HEAP_ORDERS || size > self.map_len {
            return Err(SpawnError::new(SpawnErrorKind::StackTooLarge {
                requested: size,
            }));
        }
        let base = {
            let layout = Layout::from_size_align(size, size).expect("power-of-two layout");
            let block = self.heap.alloc(layout).map_err(|()| {
                SpawnError::new(SpawnErrorKind::PoolExhausted {
                    reserved: self.map_len,
                    live: self.stats.live_bytes,
                    requested: size,
                })
            })?;
            let base = block.as_ptr() as usize;
            if size > self.page {
                // The heap kept its free-list link in the block's first
                // word, which made the first page resident. That page is the
                // guard page (guarded) or the far bottom of the stack
                // (unguarded), which a proc rarely reaches: give it back, so
                // a fresh proc costs only the pages it touches at the top.
                // SAFETY: the page lies in a block this pool just took out
                // of the heap; its contents (the stale link) are dead.
                unsafe { libc::madvise(base as *mut libc::c_void, self.page, libc::MADV_DONTNEED) };
            }
            if self.guarded {
                // SAFETY: [base, base + page) lies inside a block this pool
                // just took out of the heap; nothing else uses it.
                if let Err(err) = unsafe { protect(base, self.page, libc::PROT_NONE) } {
                    // SAFETY: the block came from this heap with this layout
                    // and is still read-write (mprotect failed).
                    unsafe { self.heap.dealloc(block, layout) };
                    let kind = if err.raw_os_error() == Some(libc::ENOMEM) {
                        SpawnErrorKind::MapLimit {
                            live_segments: self.stats.live_segments,
                        }
                    } else {
                        SpawnErrorKind::Os(err.to_string())
                    };
                    return Err(SpawnError::new(kind));
                }
            }
            base
        };
        Ok(self.hand_out(base, size))
    }

    /// Writes a handed-out segment's header and counts it live.
    #[inline(always)]
    fn hand_out(&mut self, base: usize, size: usize) -> Segment {
        let guard = if self.guarded { self.page } else { 0 };
        let seg = Segment { base, size, guard };
        // SAFETY: the header lies in the top of the block, which is
        // read-write and owned by the segment we are handing out.
        unsafe {
            seg.header().write(SegmentHeader {
                magic: SEGMENT_MAGIC,
                size,
                prev_base: 0,
                prev_size: 0,
                prev_sp: 0,
            })
        };
        self.stats.total_allocs += 1;
        self.stats.live_segments += 1;
        self.stats.live_bytes += size;
        self.stats.peak_live_segments = self.stats.peak_live_segments.max(self.stats.live_segments);
        seg
    }

    /// Takes back a segment handed out by [`alloc`](Self::alloc). Inline:
    /// every proc's end frees its segment here, into the cache.
    ///
    /// # Safety
    ///
    /// `seg` came from this pool's `alloc`, is not released twice, and no
    /// code runs on it or keeps pointers into it any more.
    #[inline]
    pub(crate) unsafe fn free(&mut self, seg: Segment) {
        // SAFETY: the segment is live, so its header is mapped read-write.
        let header = unsafe { &mut *seg.header() };
        if header.magic != SEGMENT_MAGIC || header.size != seg.size {
            corrupted_header(seg, header);
        }
        header.magic = 0;
        self.stats.live_segments -= 1;
        self.stats.live_bytes -= seg.size;
        if POISON_FREED_SEGMENTS {
            // SAFETY: [bottom, base + size) is the read-write part of a
            // segment nothing uses any more.
            unsafe { std::ptr::write_bytes(seg.bottom() as *mut u8, 0xdb, seg.size - seg.guard) };
        }
        if self.stats.cached_bytes + seg.size <= self.cache_limit {
            self.cache[seg.size.trailing_zeros() as usize].push(seg.base);
            self.stats.cached_segments += 1;
            self.stats.cached_bytes += seg.size;
            return;
        }
        // SAFETY: the segment is ours and dead (caller's contract).
        unsafe { self.release(seg.base, seg.size) };
    }

    /// Returns a block to the buddy heap: unprotect its guard page, give its
    /// pages back to the kernel, hand it to the heap.
    ///
    /// # Safety
    ///
    /// `[base, base + size)` is a block of this pool that nothing uses.
    unsafe fn release(&mut self, base: usize, size: usize) {
        if self.guarded {
            // SAFETY: the guard page belongs to this dead block.
            let unprotected =
                unsafe { protect(base, self.page, libc::PROT_READ | libc::PROT_WRITE) };
            if let Err(err) = unprotected {
                // The heap must not write into a PROT_NONE page; keep the
                // block out of it for good.
                eprintln!("procrt: cannot unprotect guard page at {base:#x}: {err}; block leaked");
                self.leaked = true;
                return;
            }
        }
        // SAFETY: the block is dead; dropping its pages loses nothing.
        unsafe { libc::madvise(base as *mut libc::c_void, size, libc::MADV_DONTNEED) };
        let layout = Layout::from_size_align(size, size).expect("power-of-two layout");
        // SAFETY: the block came from this heap with this layout, is
        // read-write again, and is not in the heap already.
        unsafe {
            self.heap.dealloc(
                NonNull::new(base as *mut u8).expect("non-null block"),
                layout,
            )
        };
    }

    /// Empties the cache into the buddy heap, giving the memory back.
    pub(crate) fn trim(&mut self) {
        for order in 0..HEAP_ORDERS {
            while let Some(base) = self.cache[order].pop() {
                let size = 1usize << order;
                self.stats.cached_segments -= 1;
                self.stats.cached_bytes -= size;
                // SAFETY: cached blocks are dead blocks of this pool.
                unsafe { self.release(base, size) };
            }
        }
    }

    /// Marks the pool as having lost track of a live segment (a proc that
    /// could not be unwound): its reservation then stays mapped on drop.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for StackPool {
    fn drop(&mut self) {
        if self.leaked || self.stats.live_segments != 0 {
            // Something may still point into a stack: leave the memory be.
            return;
        }
        // SAFETY: the reservation is ours, every segment is dead, and no
        // code runs on any of them.
        unsafe { libc::munmap(self.map_base as *mut libc::c_void, self.map_len) };
    }
}

/// `mprotect` with the `-1`-to-`io::Error` convention.
///
/// # Safety
///
/// `[addr, addr + len)` must be memory whose protection nothing else relies
/// on.
unsafe fn protect(addr: usize, len: usize, prot: libc::c_int) -> io::Result<()> {
    // SAFETY: forwarded to the caller.
    let r = unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

/// A freed segment's header is not the one `alloc` wrote: something wrote
/// over the top of a stack. Corrupted state is loud.
#[cold]
#[inline(never)]
fn corrupted_header(seg: Segment, header: &SegmentHeader) -> ! {
    crate::fatal(format_args!(
        "segment header at {:#x} corrupted (magic {:#x}, size {})",
        seg.base, header.magic, header.size
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(guarded: bool) -> StackPool {
        StackPool::new(PoolConfig {
            reservation: 64 << 20,
            guarded,
            cache_limit: 1 << 20,
            default_reservation: false,
        })
        .expect("pool")
    }

    #[test]
    fn segments_are_aligned_and_disjoint() {
        let mut p = pool(true);
        let min = p.min_segment();
        let segs: Vec<_> = (0..64).map(|i| p.alloc(min << (i % 3)).unwrap()).collect();
        for s in &segs {
            assert_eq!(s.guard_range().0 % s.size(), 0);
            assert_eq!(s.top() % 16, 0);
            assert!(s.limit() < s.top());
        }
        for (i, a) in segs.iter().enumerate() {
            for b in &segs[i + 1..] {
                assert!(
                    a.guard_range().0 + a.size() <= b.guard_range().0
                        || b.guard_range().0 + b.size() <= a.guard_range().0
                );
            }
        }
        for s in segs {
            // SAFETY: allocated above, released once.
            unsafe { p.free(s) };
        }
        assert_eq!(p.stats().live_segments, 0);
    }

    #[test]
    fn released_segments_are_reused_from_the_cache() {
        let mut p = pool(true);
        let a = p.alloc(16384).unwrap();
        // SAFETY: allocated above, released once.
        unsafe { p.free(a) };
        let b = p.alloc(16384).unwrap();
        assert_eq!(a.guard_range().0, b.guard_range().0);
        assert_eq!(p.stats().cache_hits, 1);
        // SAFETY: allocated above, released once.
        unsafe { p.free(b) };
    }

    #[test]
    fn cache_beyond_its_limit_goes_back_to_the_heap() {
        let mut p = pool(true);
        let segs: Vec<_> = (0..200).map(|_| p.alloc(16384).unwrap()).collect();
        for s in segs {
            // SAFETY: allocated above, released once.
            unsafe { p.free(s) };
        }
        assert!(p.stats().cached_bytes <= 1 << 20);
        p.trim();
        assert_eq!(p.stats().cached_segments, 0);
        // The whole reservation is one free heap again: a block of half of
        // it can be had.
        let big = p.alloc(16 << 20).unwrap();
        // SAFETY: allocated above, released once.
        unsafe { p.free(big) };
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut p = pool(false);
        let mut segs = Vec::new();
        let err = loop {
            match p.alloc(1 << 20) {
                Ok(s) => segs.push(s),
                Err(e) => break e,
            }
        };
        assert!(segs.len() >= 32, "only {} segments", segs.len());
        assert!(err.to_string().contains("exhausted"), "{err}");
        for s in segs {
            // SAFETY: allocated above, released once.
            unsafe { p.free(s) };
        }
    }
}
