/*
 * The populate probe: the fastest way this kernel offers to make 1 GiB of
 * fresh anonymous memory resident, for comparison with the worker.
 *
 * One mapping, huge pages requested, and one MADV_POPULATE_WRITE call (or a
 * write per page on kernels before 5.14).  It then waits for SIGTERM so the
 * benchmark can read its resident size.  With "--small-pages" it skips the
 * huge page request, which shows what 4 KiB pages cost.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

int main(int argc, char **argv)
{
    size_t size = (size_t)1 << 30;
    int small = argc > 1 && strcmp(argv[1], "--small-pages") == 0;
    unsigned char *p;

    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
    if (p == MAP_FAILED) {
        perror("probe: mmap");
        return 1;
    }
    madvise(p, size, small ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
    if (madvise(p, size, MADV_POPULATE_WRITE) != 0) {
        for (size_t off = 0; off < size; off += 4096)
            p[off] = 1;
    }
    pause();
    return 0;
}
