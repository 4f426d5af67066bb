/* Compiled WITHOUT -fsplit-stack: code that makes no stack checks.
 *
 * A split-stack function that calls into this object is what gold and lld
 * treat specially: they rewrite its prologue to call __morestack_non_split,
 * which asks for 16 KiB more (see procrt's arch/x86_64.s). */
#include <stdint.h>

uint64_t nosplit_leaf(uint64_t x) {
    volatile unsigned char buf[2048];
    for (unsigned i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(x + i);
    uint64_t sum = 0;
    for (unsigned i = 0; i < sizeof buf; i++)
        sum += buf[i];
    return sum;
}
