/*
 * cgroup and /proc readers.  /proc/self/cgroup names the worker's cgroup in
 * each hierarchy ("4:memory:/a/b" for v1, "0::/a/b" for v2).  The limit is
 * looked up from that folder up to the hierarchy's root, because a limit set
 * on a parent (a pod's cgroup above a container's) binds as well.  Inside a
 * container with its own cgroup namespace the path is "/" and the root
 * folder itself is the container's cgroup.
 */
#include "worker/memlimit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* At or above this, a v1 limit means "unlimited" (the kernel reports
 * PAGE_COUNTER_MAX rounded to pages, just under 2^63). */
#define UNLIMITED_FLOOR ((uint64_t)1 << 62)

const char *memlimit_base_name(enum memlimit_base base)
{
    return base == MEMLIMIT_CGROUP ? "cgroup" : "host";
}

int memlimit_parse_value(const char *text, uint64_t *bytes)
{
    char *end;
    unsigned long long value;

    while (*text == ' ' || *text == '\t')
        text++;
    if (strncmp(text, "max", 3) == 0 && (text[3] == '\0' || text[3] == '\n')) {
        *bytes = UINT64_MAX;
        return 0;
    }
    if (*text < '0' || *text > '9')
        return -EINVAL;
    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno == ERANGE)
        value = ULLONG_MAX;
    else if (errno != 0 || (*end != '\0' && *end != '\n'))
        return -EINVAL;
    *bytes = value >= UNLIMITED_FLOOR ? UINT64_MAX : (uint64_t)value;
    return 0;
}

/* Reads a small file into buf; returns 0 or a negative errno. */
static int read_small_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

static int read_mem_total(const char *meminfo, uint64_t *bytes)
{
    char buf[8192];
    const char *line;
    unsigned long long kib;
    int ret = read_small_file(meminfo, buf, sizeof(buf));

    if (ret < 0)
        return ret;
    line = strstr(buf, "MemTotal:");
    if (!line || sscanf(line, "MemTotal: %llu kB", &kib) != 1 || kib == 0)
        return -EINVAL;
    *bytes = (uint64_t)kib * 1024;
    return 0;
}

static bool is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * Finds the cgroup path for the memory controller in the content of
 * /proc/self/cgroup.  Prefers a v1 "memory" line, since on a hybrid host
 * the v2 hierarchy does not hold the memory controller.
 */
static bool find_cgroup_path(char *content, char *path, size_t size, bool *v1)
{
    bool found_v2 = false;
    char *save = NULL;

    for (char *line = strtok_r(content, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *controllers = strchr(line, ':');
        char *cgroup = controllers ? strchr(controllers + 1, ':') : NULL;

        if (!cgroup)
            continue;
        *controllers++ = '\0';
        *cgroup++ = '\0';
        if (*controllers == '\0' && strcmp(line, "0") == 0) {
            snprintf(path, size, "%s", cgroup);
            found_v2 = true;
            continue;
        }
        char *inner = NULL;

        for (char *c = strtok_r(controllers, ",", &inner); c;
             c = strtok_r(NULL, ",", &inner)) {
            if (strcmp(c, "memory") == 0) {
                snprintf(path, size, "%s", cgroup);
                *v1 = true;
                return true;
            }
        }
    }
    *v1 = false;
    return found_v2;
}

/*
 * Walks from root/path up to root, keeping the smallest limit in file.
 * When root/path does not exist (a namespaced view), only root is read.
 */
static void lowest_limit(const char *root, const char *path, const char *file,
                         uint64_t *limit, char *source, size_t source_size)
{
    char dir[PATH_MAX], candidate[PATH_MAX + 64], text[64] = "";
    size_t root_len;
    uint64_t value;

    root_len = (size_t)snprintf(dir, sizeof(dir), "%s", root);
    if (root_len >= sizeof(dir))
        return;
    snprintf(dir + root_len, sizeof(dir) - root_len, "%s",
             strcmp(path, "/") == 0 ? "" : path);
    if (!is_dir(dir))
        dir[root_len] = '\0';

    for (;;) {
        snprintf(candidate, sizeof(candidate), "%s/%s", dir, file);
        if (read_small_file(candidate, text, sizeof(text)) == 0 &&
            memlimit_parse_value(text, &value) == 0 && value < *limit) {
            *limit = value;
            snprintf(source, source_size, "%s", candidate);
        }

        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= root_len || !slash || slash < dir + root_len)
            break;
        *slash = '\0';
    }
}

int memlimit_detect(const char *cgroup_root, const char *proc_cgroup,
                    const char *meminfo, struct memlimit *out)
{
    char content[4096], path[PATH_MAX], root[PATH_MAX];
    uint64_t limit = UINT64_MAX;
    bool v1 = false;
    int ret;

    memset(out, 0, sizeof(*out));
    ret = read_mem_total(meminfo, &out->host_bytes);
    if (ret < 0)
        return ret;

    if (read_small_file(proc_cgroup, content, sizeof(content)) != 0)
        snprintf(content, sizeof(content), "0::/\n");
    if (!find_cgroup_path(content, path, sizeof(path), &v1))
        snprintf(path, sizeof(path), "/");

    if (v1) {
        snprintf(root, sizeof(root), "%s/memory", cgroup_root);
        lowest_limit(root, path, "memory.limit_in_bytes", &limit, out->source,
                     sizeof(out->source));
    } else {
        lowest_limit(cgroup_root, path, "memory.max", &limit, out->source,
                     sizeof(out->source));
    }

    if (limit < out->host_bytes) {
        out->base = MEMLIMIT_CGROUP;
        out->bytes = limit;
    } else {
        out->base = MEMLIMIT_HOST;
        out->bytes = out->host_bytes;
        snprintf(out->source, sizeof(out->source), "%s", meminfo);
    }
    return 0;
}

static int statm_fd = -1;
static long page_size;
static pthread_once_t statm_once = PTHREAD_ONCE_INIT;

/* Keeps statm open: a pread of it costs a few microseconds. */
static void open_statm(void)
{
    statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    page_size = sysconf(_SC_PAGESIZE);
}

uint64_t memlimit_rss_bytes(void)
{
    char buf[128];
    unsigned long long size, resident;
    ssize_t n;

    pthread_once(&statm_once, open_statm);
    if (statm_fd < 0)
        return 0;
    n = pread(statm_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)page_size;
}
