//! The current unit of the running proc: the TOC "register".
//!
//! # Design note
//!
//! The design note dedicates one register to the current crate's TOC. In
//! procrt, code never needs that register to *find* its table: a unit's
//! code reaches its own import slots position-independently. On x86_64 that
//! is pc-relative addressing (`mov rax, [rip + slot]`), so no register is
//! spent at all. On i386, position-independent code keeps its image's GOT
//! address in `ebx` (loaded by `call __x86.get_pc_thunk.bx; add ebx,
//! _GLOBAL_OFFSET_TABLE_` in each function that needs it) and reaches the
//! slots as `[ebx + slot@GOTOFF]`; `ebx` is callee-saved, and the switch
//! (`arch/i686.s`) already saves and restores it with the other callee-saved
//! registers, so a proc resumed in the middle of unit code finds its table
//! exactly where it left it. So the machine-level TOC register exists (ebx
//! on i386) or is unnecessary (x86_64), and both are handled by the switch
//! as it is.
//!
//! What the runtime itself needs is the *identity* of the unit image a proc
//! is running in (`toc::current()`), to tell when an old image can be
//! purged. That is kept like the stack limit: the `Proc` control block has
//! one word, `unit`, and `Rt::set_current`, which runs at every switch
//! before the registers are exchanged, copies it into the thread-local
//! [`RUNNING`] (one line, `set_running_unit`). `current()` is then a single
//! load from thread-local storage, the software twin of reading a register.
//! A tracked call into a unit ([`Import::call`](super::Import::call))
//! writes the new image into both places and restores the previous one when
//! it returns; the thread-local also points at the running proc's word so
//! that it can. Rejected: writing the word into `%fs`/`%gs`-relative TCB
//! space from the assembly switch (the stack limit's approach): it would
//! need a TCB slot that glibc does not reserve, and an edit of `arch/*.s`.
//!
//! Calls from one unit into another through its TOC do not update the
//! current unit (that would cost two thread-local stores per call and the
//! unit would have to call into the host to make them): `current()` is the
//! unit a proc entered from host code. Purging uses that conservatively.

use super::ImageInfo;
use std::cell::Cell;
use std::ptr;

/// What the switch keeps current for this thread.
struct Running {
    /// The running proc's `unit` word, or null on a thread's own stack.
    word: Cell<*const Cell<usize>>,
    /// The image the running context is in (a copy of `*word`), or null
    /// when it runs host code.
    image: Cell<*const ImageInfo>,
}

thread_local! {
    /// Kept by the scheduler at every switch (`set_running_unit`).
    static RUNNING: Running = const {
        Running {
            word: Cell::new(ptr::null()),
            image: Cell::new(ptr::null()),
        }
    };
}

/// Records the `unit` word of the context about to run (`None`: not a
/// proc). Called by `Rt::set_current` at every switch; the word must stay
/// alive while that context runs (a proc's control block does).
#[inline(always)]
pub(crate) fn set_running_unit(word: Option<&Cell<usize>>) {
    RUNNING.with(|r| match word {
        Some(w) => {
            r.word.set(w);
            r.image.set(w.get() as *const ImageInfo);
        }
        None => {
            r.word.set(ptr::null());
            r.image.set(ptr::null());
        }
    });
}

/// The unit image the running proc entered through a tracked call
/// ([`Import::call`](super::Import::call)), or `None` in host code. A single
/// thread-local load.
///
/// ```
/// assert!(procrt::toc::current().is_none());
/// ```
#[inline(always)]
pub fn current() -> Option<&'static ImageInfo> {
    let p = RUNNING.with(|r| r.image.get());
    // SAFETY: only leaked (never freed) ImageInfos are stored here.
    unsafe { p.as_ref() }
}

/// While alive, the running context is inside a tracked call into `image`.
pub(crate) struct Entered {
    /// The image entered.
    image: &'static ImageInfo,
    /// The current image before the call.
    prev: *const ImageInfo,
}

/// Makes `image` current for the running context until the guard drops.
#[inline(always)]
pub(crate) fn enter(image: &'static ImageInfo) -> Entered {
    image.enter();
    let prev = RUNNING.with(|r| r.image.replace(image));
    store_word(image as *const ImageInfo);
    Entered { image, prev }
}

impl Drop for Entered {
    #[inline(always)]
    fn drop(&mut self) {
        RUNNING.with(|r| r.image.set(self.prev));
        store_word(self.prev);
        self.image.leave();
    }
}

/// Writes `image` into the running proc's `unit` word, if a proc runs.
#[inline(always)]
fn store_word(image: *const ImageInfo) {
    let w = RUNNING.with(|r| r.word.get());
    if !w.is_null() {
        // SAFETY: the word belongs to the proc running right now (the
        // scheduler replaced it at the last switch), so it is alive.
        unsafe { (*w).set(image as usize) };
    }
}
