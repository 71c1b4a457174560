/*
 * Walks /proc/self/smaps.  A mapping qualifies when it is private, backed by
 * a file, not writable, and its "Anonymous:" count is 0 kB: then no page in
 * it was ever copied on write (relocated RELRO data would show up there), and
 * MADV_DONTNEED only unmaps clean page-cache pages.  Writable mappings are
 * never touched, so no data can be lost.
 */
#include "worker/trim.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

struct mapping {
    uintptr_t start;
    uintptr_t end;
    bool eligible;
    unsigned long long rss_kb;
};

static uint64_t drop(const struct mapping *m)
{
    if (!m->eligible || m->rss_kb == 0)
        return 0;
    if (madvise((void *)m->start, m->end - m->start, MADV_DONTNEED) != 0)
        return 0;
    return m->rss_kb * 1024;
}

uint64_t trim_library_pages(void)
{
    FILE *smaps = fopen("/proc/self/smaps", "re");
    struct mapping m = {0};
    char line[512], perms[8], path[256];
    unsigned long long kb;
    uint64_t dropped = 0;

    if (!smaps)
        return 0;
    while (fgets(line, sizeof(line), smaps)) {
        unsigned long start, end;

        path[0] = '\0';
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &start, &end, perms,
                   path) >= 3) {
            dropped += drop(&m);
            m = (struct mapping){.start = start, .end = end};
            m.eligible = perms[1] == '-' && perms[3] == 'p' && path[0] == '/';
        } else if (sscanf(line, "Rss: %llu kB", &kb) == 1) {
            m.rss_kb = kb;
        } else if (sscanf(line, "Anonymous: %llu kB", &kb) == 1 && kb > 0) {
            m.eligible = false;
        }
    }
    dropped += drop(&m);
    fclose(smaps);
    return dropped;
}
