/*
 * klog-shaped logging.  A whole line is formatted into one buffer and written
 * with a single write(2), so lines from several threads never interleave.
 * Lines longer than the buffer are cut and end with "...".
 */
#include "klog.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static enum klog_format output_format = KLOG_TEXT;
static int verbosity = 2;

struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    bool truncated;
};

void klog_set_format(enum klog_format format)
{
    output_format = format;
}

int klog_parse_format(const char *name, enum klog_format *format)
{
    if (strcmp(name, "text") == 0) {
        *format = KLOG_TEXT;
        return 0;
    }
    if (strcmp(name, "json") == 0) {
        *format = KLOG_JSON;
        return 0;
    }
    return -EINVAL;
}

void klog_set_verbosity(int level)
{
    verbosity = level;
}

bool klog_enabled(int level)
{
    return level <= verbosity;
}

static void append(struct line *l, const char *s, size_t n)
{
    /* Keep room for the trailing "...\n". */
    size_t room = sizeof(l->buf) - 5 - l->len;

    if (n > room) {
        n = room;
        l->truncated = true;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void append_str(struct line *l, const char *s)
{
    append(l, s, strlen(s));
}

/* Appends s inside double quotes with JSON escaping, which also suits text. */
static void append_quoted(struct line *l, const char *s)
{
    char esc[8];

    append(l, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            append(l, esc, 2);
        } else if (c == '\n') {
            append(l, "\\n", 2);
        } else if (c == '\t') {
            append(l, "\\t", 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            append_str(l, esc);
        } else {
            append(l, (const char *)&c, 1);
        }
    }
    append(l, "\"", 1);
}

static void append_header(struct line *l, char severity, const char *file,
                          int line, int level)
{
    char head[128];
    struct timeval tv;
    struct tm tm;
    const char *base = strrchr(file, '/');

    base = base ? base + 1 : file;
    gettimeofday(&tv, NULL);
    if (output_format == KLOG_JSON) {
        snprintf(head, sizeof(head), "{\"ts\":%ld.%03ld,\"caller\":\"%s:%d\"",
                 (long)tv.tv_sec, (long)(tv.tv_usec / 1000), base, line);
        append_str(l, head);
        if (severity == 'I') {
            snprintf(head, sizeof(head), ",\"v\":%d", level);
            append_str(l, head);
        }
        return;
    }
    localtime_r(&tv.tv_sec, &tm);
    snprintf(head, sizeof(head), "%c%02d%02d %02d:%02d:%02d.%06ld %7d %s:%d] ",
             severity, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, (long)tv.tv_usec, (int)getpid(), base, line);
    append_str(l, head);
}

static void append_pair(struct line *l, const char *key, const char *value)
{
    if (output_format == KLOG_JSON) {
        append(l, ",", 1);
        append_quoted(l, key);
        append(l, ":", 1);
    } else {
        append(l, " ", 1);
        append_str(l, key);
        append(l, "=", 1);
    }
    append_quoted(l, value ? value : "<nil>");
}

static void emit(char severity, const char *file, int line, int level,
                 const char *message, const char *err, va_list pairs)
{
    struct line l = {.len = 0, .truncated = false};
    const char *key;

    append_header(&l, severity, file, line, level);
    if (output_format == KLOG_JSON) {
        append_str(&l, ",\"msg\":");
        append_quoted(&l, message);
    } else {
        append_quoted(&l, message);
    }
    if (err)
        append_pair(&l, "err", err);
    while ((key = va_arg(pairs, const char *)) != NULL)
        append_pair(&l, key, va_arg(pairs, const char *));
    if (l.truncated)
        append_str(&l, "...");
    if (output_format == KLOG_JSON && !l.truncated)
        append(&l, "}", 1);
    l.buf[l.len++] = '\n';
    /* A failed log write has nowhere better to be reported. */
    while (write(STDERR_FILENO, l.buf, l.len) < 0 && errno == EINTR)
        ;
}

void klog_info(int level, const char *file, int line, const char *message, ...)
{
    va_list pairs;

    if (!klog_enabled(level))
        return;
    va_start(pairs, message);
    emit('I', file, line, level, message, NULL, pairs);
    va_end(pairs);
}

void klog_error(const char *file, int line, const char *message,
                const char *err, ...)
{
    va_list pairs;

    va_start(pairs, err);
    emit('E', file, line, 0, message, err, pairs);
    va_end(pairs);
}
