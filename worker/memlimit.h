/*
 * The memory a worker can see: its cgroup memory limit, or the host's
 * MemTotal when no limit applies, and its own resident set size.
 *
 * The limit is the smallest one set on the worker's cgroup or any ancestor,
 * read from cgroup v1 memory.limit_in_bytes or cgroup v2 memory.max.  A v2
 * "max", a v1 value near 2^63 (the kernel's way of saying no limit) and a
 * limit above MemTotal all fall back to the host.  The root folder is a
 * parameter so tests can point it at fixture folders.
 */
#ifndef WORKER_MEMLIMIT_H
#define WORKER_MEMLIMIT_H

#include <limits.h>
#include <stdint.h>

enum memlimit_base {
    MEMLIMIT_CGROUP,
    MEMLIMIT_HOST,
};

struct memlimit {
    enum memlimit_base base;
    /* The limit in bytes: the cgroup's, or the host's MemTotal. */
    uint64_t bytes;
    uint64_t host_bytes;
    /* The file the limit was read from, or "/proc/meminfo". */
    char source[PATH_MAX + 64];
};

/* Returns "cgroup" or "host". */
const char *memlimit_base_name(enum memlimit_base base);

/*
 * Detects the limit.  cgroup_root is normally "/sys/fs/cgroup",
 * proc_cgroup "/proc/self/cgroup" and meminfo "/proc/meminfo".
 * Returns 0, or a negative errno when MemTotal cannot be read; a missing or
 * unreadable cgroup file only means "no limit".
 */
int memlimit_detect(const char *cgroup_root, const char *proc_cgroup,
                    const char *meminfo, struct memlimit *out);

/*
 * Parses the content of a v1 limit_in_bytes or v2 memory.max file.
 * Returns 0 and sets *bytes, with UINT64_MAX for no limit; -EINVAL on garbage.
 */
int memlimit_parse_value(const char *text, uint64_t *bytes);

/* Returns the resident set size of this process in bytes, or 0 on error. */
uint64_t memlimit_rss_bytes(void);

#endif
