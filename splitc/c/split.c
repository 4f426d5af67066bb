/* Compiled with -fsplit-stack: every function below begins with a check of
 * its frame against the TCB slot (%fs:0x70 on x86_64, %gs:0x30 on i386) and
 * calls __morestack when the frame does not fit. procrt provides that
 * __morestack; these functions exercise it (see procrt's tests/split_stack.rs
 * and examples/split_stack.rs, and src/lib.rs for the expected results).
 *
 * No libc calls: a call into code built without -fsplit-stack makes lld
 * rewrite the caller's prologue (only split_calls_nosplit wants that). The
 * loops use volatile buffers so that gcc neither drops the frames nor turns
 * the loops into memset calls. */
#include <stdint.h>

/* Each level's locals: WORDS 8-byte words, 1000 bytes. */
#define WORDS 125

/* The word level `level` stores at index `k`. */
static inline uint64_t pattern(uint32_t level, uint64_t seed, unsigned k) {
    return seed + (uint64_t)level * 131u + k;
}

/* Sum (wrapping) of the words each level stored in its frame; ~0 when a
 * frame was found corrupted on the way back up. Levels n, n-1, ..., 0. */
__attribute__((noinline))
uint64_t split_recurse(uint32_t n, uint64_t seed) {
    volatile uint64_t buf[WORDS];
    for (unsigned k = 0; k < WORDS; k++)
        buf[k] = pattern(n, seed, k);
    uint64_t below = n == 0 ? 0 : split_recurse(n - 1, seed);
    if (below == ~(uint64_t)0)
        return below;
    uint64_t sum = 0;
    for (unsigned k = 0; k < WORDS; k++) {
        if (buf[k] != pattern(n, seed, k))
            return ~(uint64_t)0;
        sum += buf[k];
    }
    return below + sum;
}

/* Ten integer arguments: four are passed on the stack on x86_64, all of
 * them on i386, so every split copies them to the new segment. Returns
 * the sum over all levels of level + a + 2b + ... + 9i (i grows by one
 * per level), see procrt_splitc::expected_args. */
__attribute__((noinline))
int64_t split_args(uint32_t n, int64_t a, int64_t b, int64_t c, int64_t d,
                   int64_t e, int64_t f, int64_t g, int64_t h, int64_t i) {
    volatile uint64_t buf[WORDS];
    for (unsigned k = 0; k < WORDS; k++)
        buf[k] = (uint64_t)a + k;
    int64_t mine = (int64_t)n + a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f +
                   7 * g + 8 * h + 9 * i;
    int64_t below = n == 0 ? 0 : split_args(n - 1, a, b, c, d, e, f, g, h, i + 1);
    for (unsigned k = 0; k < WORDS; k++)
        if (buf[k] != (uint64_t)a + k)
            return INT64_MIN;
    return below == INT64_MIN ? below : below + mine;
}

/* A double result (xmm0 on x86_64, st0 on i386) through every split:
 * returns x + (n + 1) * inc. (Constants come in as arguments: on i386 a
 * constant from memory needs the PIC register, whose thunk lld counts as
 * code without split-stack; see build.rs.) */
__attribute__((noinline))
double split_double(uint32_t n, double x, double inc) {
    volatile uint64_t buf[WORDS];
    for (unsigned k = 0; k < WORDS; k++)
        buf[k] = k;
    double below = n == 0 ? x : split_double(n - 1, x, inc);
    return below + inc + (double)(int64_t)(buf[WORDS - 1] - (WORDS - 1));
}

/* A long double result (st0 on both targets), returned as a double. */
__attribute__((noinline))
static long double split_ld_inner(uint32_t n, long double x, long double inc) {
    volatile uint64_t buf[WORDS];
    for (unsigned k = 0; k < WORDS; k++)
        buf[k] = k;
    long double below = n == 0 ? x : split_ld_inner(n - 1, x, inc);
    return below + inc + (long double)(int64_t)(buf[3] - 3);
}

double split_long_double(uint32_t n, double x, double inc) {
    return (double)split_ld_inner(n, (long double)x, (long double)inc);
}

/* A struct returned in memory (on i386 the callee pops the hidden pointer:
 * `ret $4`, which __morestack must step over). */
struct triple { int64_t a, b, c; };

__attribute__((noinline))
struct triple split_struct(uint32_t n, int64_t x) {
    volatile uint64_t buf[WORDS];
    for (unsigned k = 0; k < WORDS; k++)
        buf[k] = k;
    struct triple t;
    if (n == 0) {
        t.a = x; t.b = 2 * x; t.c = 3 * x;
    } else {
        t = split_struct(n - 1, x);
    }
    t.a += 1; t.b += 2; t.c += 3 + (buf[9] - 9);
    return t;
}

/* Sum a + b + c of split_struct(n, x). */
int64_t split_struct_sum(uint32_t n, int64_t x) {
    struct triple t = split_struct(n, x);
    return t.a + t.b + t.c;
}

/* Recurses n levels, then calls back(x) (Rust code: no checks) at the
 * bottom; adds one per level. A panic in `back` unwinds through every
 * level and every split. */
__attribute__((noinline))
uint64_t split_call_back(uint32_t n, uint64_t (*back)(uint64_t), uint64_t x) {
    volatile uint64_t buf[WORDS];
    for (unsigned k = 0; k < WORDS; k++)
        buf[k] = k;
    uint64_t r = n == 0 ? back(x) : split_call_back(n - 1, back, x);
    return r + 1 + (buf[5] - 5);
}

/* Recurses n levels, then calls nosplit_leaf, compiled without split
 * stacks: lld rewrites this function's prologue to ask for 16 KiB more
 * and to call __morestack_non_split. lld refuses such calls on i386
 * ("target doesn't support split stacks"), so there the leaf is a
 * split-stack copy (see build.rs). */
#if defined(__x86_64__)
uint64_t nosplit_leaf(uint64_t x);
#else
static uint64_t nosplit_leaf(uint64_t x) {
    volatile unsigned char buf[2048];
    for (unsigned i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(x + i);
    uint64_t sum = 0;
    for (unsigned i = 0; i < sizeof buf; i++)
        sum += buf[i];
    return sum;
}
#endif

__attribute__((noinline))
uint64_t split_calls_nosplit(uint32_t n, uint64_t x) {
    volatile uint64_t buf[WORDS];
    for (unsigned k = 0; k < WORDS; k++)
        buf[k] = k;
    uint64_t r = n == 0 ? nosplit_leaf(x) : split_calls_nosplit(n - 1, x);
    return r + (buf[5] - 5);
}

/* The stack pointer of a frame, to tell which segment runs. */
__attribute__((noinline))
uintptr_t split_stack_pointer(void) {
    volatile unsigned char probe = 0;
    return (uintptr_t)&probe;
}

/* A 16 KiB frame that touches one word: from a small segment every call
 * splits, so a loop of calls measures one __morestack crossing (the spare
 * segment cached) against the same call where the segment has room. */
__attribute__((noinline))
uint64_t split_big_frame(uint64_t x) {
    volatile uint64_t buf[2048];
    buf[0] = x;
    return buf[0] + 1;
}

/* A frame just under 256 bytes: its prologue compares the stack pointer
 * itself with the slot, so the frame may end up to 256 bytes below it,
 * and the call below then enters __morestack that far down: the worst
 * case the slot's margin is sized for. */
__attribute__((noinline))
static uint64_t frame_240(uint64_t x) {
    volatile uint64_t buf[28];
    for (unsigned k = 0; k < 28; k++)
        buf[k] = x;
    return split_big_frame(buf[27]);
}

/* Recurses n levels of 16-byte frames (each compares the stack pointer
 * with the slot), then calls frame_240: sweeping n puts frame_240 at every
 * 16-byte position below and above the slot. Returns x + 1 + n. */
__attribute__((noinline))
uint64_t split_small_chain(uint32_t n, uint64_t x) {
    if (n == 0)
        return frame_240(x);
    return split_small_chain(n - 1, x) + 1;
}
